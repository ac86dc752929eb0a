"""The bench runner's node side, run for real through a local shell instead of SSH.

The remote commands (quoting, cd into the run dir, sourcing oneAPI, the venv's python,
reading result.jsonl back) execute in `sh -c` against a tiny `sglang.bench_one_batch`
that prints SGLang's fork format; SSH itself is the core's business and tested there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from xpufleet.bench.configs import BenchPlan, plan_bench, select_configs
from xpufleet.bench.runner import execute_plan
from xpufleet.bench.runs import BenchRow, BenchRun, read_run, write_run
from xpufleet.host import Host
from xpufleet.transport import Connector, Prepared

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

FAKE_BENCH = r"""
import argparse, itertools, json, os, sys
p = argparse.ArgumentParser()
p.add_argument("--batch-size", type=int, nargs="+")
p.add_argument("--input-len", type=int, nargs="+")
p.add_argument("--output-len", type=int, nargs="+")
p.add_argument("--model-path")
p.add_argument("--trust-remote-code", action="store_true")
p.add_argument("--device")
p.add_argument("--tp-size", type=int, default=1)
p.add_argument("--profile", action="store_true")
a = p.parse_args()
if a.tp_size == 8:
    print("RuntimeError: XPU out of memory", file=sys.stderr)
    sys.exit(1)
with open("env.txt", "w") as fh:
    fh.write(os.environ.get("FAKE_ONEAPI", "") + " " + os.environ["ZE_FLAT_DEVICE_HIERARCHY"])
print("max_total_num_tokens=4096")
print("Benchmark ...")
with open("result.jsonl", "a") as out:
    for bs, il, ol in itertools.product(a.batch_size, a.input_len, a.output_len):
        if bs * (il + ol) > 4096:
            print(f"skipping ({bs}, {il}, {ol}) due to max batch size limit")
            continue
        prefill = il * bs / 100000.0
        total = prefill + ol * 0.01
        print(f"Prefill. latency: {prefill:6.5f} s, throughput: {il * bs / prefill:9.2f} token/s")
        print(f"Decode.  latency: {0.01:6.5f} s, throughput: {bs / 0.01:9.2f} token/s")
        print(f"Decode.  median latency: {0.01:6.5f} s, "
              f"median throughput: {bs / 0.01:9.2f} token/s")
        print(f"Total. latency: {total:6.3f} s, throughput: {(il + ol) * bs / total:9.2f} token/s")
        out.write(json.dumps({"run_name": "before", "batch_size": bs, "input_len": il,
            "output_len": ol, "prefill_latency": prefill, "prefill_throughput": il * bs / prefill,
            "median_decode_latency": 0.01, "median_decode_throughput": bs / 0.01,
            "total_latency": total, "overall_throughput": (il + ol) * bs / total}) + "\n")
"""


class LocalShellSession(Connector):
    """A Connector (Session.run's contract: quoted env, stdin, check) over a local `sh -c`."""

    def __init__(self, host: Host, pythonpath: Path) -> None:
        self.host = host
        self.pythonpath = pythonpath
        self.commands: list[str] = []
        self.round_trips = 0

    def _execute(self, cmd: Prepared) -> tuple[str, str, int]:
        self.commands.append(cmd.command)
        proc = subprocess.run(
            ["sh", "-c", cmd.full],
            input=cmd.stdin,
            capture_output=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(self.pythonpath)},
        )
        return proc.stdout.decode(), proc.stderr.decode(), proc.returncode


def make_node(tmp_path: Path) -> tuple[Host, Path]:
    venv_bin = tmp_path / "node dir" / "venv" / "bin"  # a space: quoting must hold
    venv_bin.mkdir(parents=True)
    (venv_bin / "python3").symlink_to(sys.executable)
    (venv_bin / "python").symlink_to(sys.executable)  # a venv has both names
    oneapi = tmp_path / "node dir" / "oneapi"
    oneapi.mkdir()
    (oneapi / "setvars.sh").write_text("export FAKE_ONEAPI=sourced\n")
    package = tmp_path / "pkgs" / "sglang"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "bench_one_batch.py").write_text(FAKE_BENCH)
    state = tmp_path / "node dir" / "state"
    host = Host(
        "node1",
        "127.0.0.1",
        vars={
            "venv": str(venv_bin.parent),
            "oneapi_root": str(oneapi),
            "state_dir": str(state),
            "model_path": "/models/it's here",
        },
    )
    return host, tmp_path / "pkgs"


def test_sweep_and_failure_run_through_a_real_shell(tmp_path: Path) -> None:
    host, pythonpath = make_node(tmp_path)
    session = LocalShellSession(host, pythonpath)
    configs = select_configs(["tp8"], batch_sizes=[1, 64], input_lens=[32, 128])
    plan = plan_bench(configs, tiles_per_node=8, nodes=["node1"], model_path="/m")
    rows, env, warnings = execute_plan(
        session,  # type: ignore[arg-type]
        plan,
        run_id="bench-test",
        logs_dir=tmp_path / "run" / "logs",
    )
    assert warnings == []
    assert env.versions["python"] == sys.version.split()[0]
    assert env.simulated is None or "stand-in" in env.simulated
    by_name = {r.config.name: r for r in rows}
    assert by_name["bs1-in32-out32-tp1"].status == "ok"
    assert by_name["bs1-in32-out32-tp1"].metrics["total_latency"] == 0.32032
    assert by_name["bs1-in128-out32-tp1"].metrics["prefill_latency"] == 0.00128
    assert by_name["bs64-in32-out32-tp1"].metrics["median_decode_throughput"] == 6400.0
    assert by_name["bs64-in128-out32-tp1"].status == "skipped"
    assert by_name["tp8"].status == "failed"
    assert "out of memory" in by_name["tp8"].message
    # tp8 ran first (alone, and failed), then one process for the whole tp1 sweep;
    # setvars sourced, device hierarchy passed
    workdir = tmp_path / "node dir" / "state" / "runs" / "bench-test" / "bench" / "1"
    assert (workdir / "env.txt").read_text() == "sourced FLAT"
    assert len((workdir / "result.jsonl").read_text().splitlines()) == 3
    bench_commands = [c for c in session.commands if "sglang.bench_one_batch" in c]
    assert len(bench_commands) == 2
    assert "'/models/it'\"'\"'s here'" in bench_commands[0]
    logs = sorted(p.name for p in (tmp_path / "run" / "logs").iterdir())
    assert logs == ["00-one_batch.stderr", "01-one_batch.stdout"]  # empty stderr not kept
    # and the rows make a run on disk that reads back
    run = BenchRun("bench-test", rows, plan.to_json(), env.versions, env.wheels)
    write_run(run, tmp_path / "run")
    assert [r.status for r in read_run(tmp_path / "run").rows] == [r.status for r in rows]


FAKE_SERVING = r"""
import argparse, json, pathlib, sys
p = argparse.ArgumentParser()
for flag in ("--backend", "--dataset-name", "--dataset-path", "--random-input-len",
             "--random-output-len", "--random-range-ratio", "--num-prompts", "--tokenizer",
             "--host", "--port", "--output-file"):
    p.add_argument(flag)
p.add_argument("--disable-tqdm", action="store_true")
a = p.parse_args()
assert a.dataset_name == "random" and a.backend in ("sglang", "vllm"), a
assert len(json.load(open(a.dataset_path))) == int(a.num_prompts), a  # staged, no download
print(f"Namespace(backend={a.backend!r})")
here = pathlib.Path(sys.argv[0])
print(here.with_name("block.txt").read_text())
record = here.with_name("record.jsonl")
if record.exists():  # the real tool appends its record to --output-file
    with open(a.output_file, "a") as fh:
        fh.write(record.read_text())
"""


def serve_json(path: str, doc: Any) -> tuple[ThreadingHTTPServer, int]:
    """A local HTTP server answering GET `path` with `doc` as node 0's server would."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = json.dumps(doc).encode()
            self.send_response(200 if self.path == path else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def fixture_text(prefix: str) -> str:
    return next(
        p for p in FIXTURES.glob(f"{prefix}_*") if not p.name.endswith(".source.txt")
    ).read_text()


def serving_node(tmp_path: Path, block: str) -> tuple[Host, Path]:
    """A node whose bench_serving prints the fixture `block`'s result block."""
    host, pythonpath = make_node(tmp_path)
    (pythonpath / "sglang" / "bench_serving.py").write_text(FAKE_SERVING)
    (pythonpath / "sglang" / "block.txt").write_text(fixture_text(block))
    return host, pythonpath


def run_plan(node: Host, pythonpath: Path, plan: BenchPlan, logs_dir: Path) -> list[BenchRow]:
    session = LocalShellSession(node, pythonpath)
    rows, _, _ = execute_plan(session, plan, run_id=logs_dir.name, logs_dir=logs_dir)  # type: ignore[arg-type]
    return rows


def test_serving_against_a_running_server_and_without_one(tmp_path: Path) -> None:
    host, pythonpath = serving_node(tmp_path, "13b")
    configs = select_configs(batch_sizes=[10], input_lens=[1024], tps=[16])
    plan = plan_bench(configs, tiles_per_node=8, nodes=["node1", "node2"], model_path="/m")

    server, port = serve_json("/get_server_info", {"tp_size": 16})
    try:
        node = Host(host.name, host.address, vars={**host.vars, "sglang_port": port})
        (row,) = run_plan(node, pythonpath, plan, tmp_path / "r1")
        assert row.status == "ok", row.message
        assert row.kind == "serving"
        assert row.metrics["total_throughput"] == 361.01
        assert row.metrics["median_e2e_latency"] == 7886.13
        # a server of another tp is not measured
        wrong = select_configs(batch_sizes=[10], input_lens=[1024], tps=[24])
        wrong_plan = plan_bench(wrong, tiles_per_node=8, nodes=["a", "b", "c"], model_path="/m")
        (row,) = run_plan(node, pythonpath, wrong_plan, tmp_path / "r2")
        assert row.status == "failed" and "runs tp 16, this config needs tp 24" in row.message
    finally:
        server.shutdown()
        server.server_close()

    # nothing listens any more on that port
    node = Host(host.name, host.address, vars={**host.vars, "sglang_port": port})
    (row,) = run_plan(node, pythonpath, plan, tmp_path / "r3")
    assert row.status == "failed"
    assert f"no SGLang server answers on node1:{port}" in row.message
    assert "invoke launch --tp 16" in row.message


def test_serving_against_vllm_asks_v1_models_and_keeps_the_jsonl_record(tmp_path: Path) -> None:
    """engine vllm: the server must list a model, the client runs `--backend vllm`
    against `vllm_port`, and the row takes the record the tool appended (13e)."""
    host, pythonpath = serving_node(tmp_path, "13d")
    (pythonpath / "sglang" / "record.jsonl").write_text(fixture_text("13e"))
    configs = select_configs(batch_sizes=[2], input_lens=[64], output_lens=[8], tps=[1])
    plan = plan_bench(configs, tiles_per_node=8, nodes=["node1"], model_path="/m", engine="vllm")

    server, port = serve_json("/v1/models", {"object": "list", "data": [{"id": "m"}]})
    try:
        node = Host(host.name, host.address, vars={**host.vars, "vllm_port": port})
        (row,) = run_plan(node, pythonpath, plan, tmp_path / "logs")
    finally:
        server.shutdown()
        server.server_close()
    assert (row.kind, row.status) == ("serving", "ok"), row.message
    assert "Namespace(backend='vllm')" in (tmp_path / "logs" / "00-serving.stdout").read_text()
    saved = json.loads((tmp_path / "logs" / "00-serving.jsonl").read_text())
    assert row.metrics["median_e2e_latency"] == saved["median_e2e_latency_ms"] != 2904.07
