"""`invoke bench` on the lab: bench_one_batch on node 0 over SSH in the node's venv,
bench_serving against the tp 8 server `invoke launch` starts across two nodes, and
`--compare` of the two runs. What is measured is the lab's SGLang stand-in (a tiny model
on CPU torch/gloo), and the output says so; the numbers are not Intel GPU performance.
The serving client is the REAL `sglang.bench_serving` of sglang 0.4.3.post2 (its own env,
once per machine: `xpufleet.lab.upstream_sglang`), so the stand-in's API is held to it.

Lengths are small so the module stays within a few minutes on two cores; results go to
a temporary runs dir (INVOKE_XPUFLEET_RUNS_DIR), never the repository's runs/.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from xpufleet.bench.parsers import parse_serving
from xpufleet.lab import Lab
from xpufleet.lab.standin import build_wheel, version
from xpufleet.lab.upstream_sglang import SGLANG, ensure_upstream_sglang

pytestmark = pytest.mark.lab

INVOKE = str(Path(sys.executable).parent / "invoke")
REPO = Path(__file__).resolve().parents[2]
#: the tp 8 config measured through bench_serving (small: 2 prompts of 64 tokens, 8 out)
SERVING_FLAGS = ("--tp", "8", "--batch-size", "2", "--input", "64", "--output", "8")
SERVING_CONFIG = "bs2-in64-out8-tp8"


@dataclass
class Invocation:
    code: int
    stdout: str
    stderr: str

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-runs")


def invoke(runs_dir: Path, *args: str, timeout: float = 600) -> Invocation:
    env = dict(os.environ, INVOKE_XPUFLEET_RUNS_DIR=str(runs_dir), COLUMNS="200")
    proc = subprocess.run(
        [INVOKE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )
    return Invocation(proc.returncode, proc.stdout, proc.stderr)


def run_dirs(runs_dir: Path) -> set[Path]:
    return {p for p in runs_dir.glob("bench-*") if p.is_dir()}


@pytest.fixture(scope="module")
def single_tile(provisioned_lab: Lab, runs_dir: Path) -> tuple[Invocation, Path]:
    """`invoke bench --config single-tile` on the provisioned lab, human output."""
    before = run_dirs(runs_dir)
    result = invoke(
        runs_dir, "bench", "--config", "single-tile", "--hosts", str(provisioned_lab.inventory_path)
    )
    new = run_dirs(runs_dir) - before
    assert len(new) == 1, result.stderr
    return result, new.pop()


@dataclass
class ServingRuns:
    bench: Invocation
    run_dir: Path
    wrong_tp: Invocation


@pytest.fixture(scope="module")
def serving(tp8_two_nodes: Any, runs_dir: Path) -> ServingRuns:
    """The session's `invoke launch --tp 8 --nnodes 2` (tests/lab/conftest.py: shared
    with test_launch.py, which stops it), then `invoke bench` of single-tile plus a tp 8
    config with --nnodes 2 (bench_serving against that server), and a tp 16 config that
    the server cannot serve."""
    hosts = ("--hosts", str(tp8_two_nodes.inventory))
    ensure_upstream_sglang()  # the lab inventory's bench_python (built once per machine)
    code, launch = tp8_two_nodes.get()
    assert code == 0, json.dumps(launch)[:4000]
    before = run_dirs(runs_dir)
    bench = invoke(
        runs_dir,
        "bench",
        "--config",
        "single-tile",
        *SERVING_FLAGS,
        "--nnodes",
        "2",
        *hosts,
        "--json",
    )
    new = run_dirs(runs_dir) - before
    assert len(new) == 1, bench.stdout + bench.stderr
    wrong_tp = invoke(
        runs_dir, "bench", "--tp", "16", "--input", "16", "--output", "4", *hosts, "--json"
    )
    return ServingRuns(bench, new.pop(), wrong_tp)


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def doc_versions(run_dir: Path) -> dict[str, Any]:
    return read_json(run_dir / "bench.json")["versions"]


# --------------------------------------------------------------------------- single node


def test_single_tile_runs_bench_one_batch_on_node0_and_says_simulated(
    single_tile: tuple[Invocation, Path],
) -> None:
    result, run_dir = single_tile
    assert result.code == 0, result.stderr
    assert "SIMULATED" in result.stderr
    assert "not Intel hardware" in result.stderr
    assert "node1: one_batch single-tile" in result.stderr
    doc = read_json(run_dir / "bench.json")
    assert doc["simulated"] and "stand-in" in doc["simulated"]
    (run,) = doc["plan"]["runs"]
    assert (run["kind"], run["nnodes"], run["config"]["name"]) == ("one_batch", 1, "single-tile")
    assert doc["plan"]["nodes"][0] == "node1"
    (row,) = doc["rows"]
    assert (row["status"], row["kind"], row["node"]) == ("ok", "one_batch", "node1")
    metrics = row["metrics"]
    assert metrics["total_latency"] > 0
    # bench_one_batch's own definition, from its JSONL record: (in + out) * bs / latency
    assert metrics["overall_throughput"] == pytest.approx((32 + 32) / metrics["total_latency"])
    assert metrics["prefill_throughput"] == pytest.approx(32 / metrics["prefill_latency"])


def test_single_tile_records_versions_and_the_installed_wheel_hash(
    single_tile: tuple[Invocation, Path], tmp_path: Path
) -> None:
    _, run_dir = single_tile
    doc = read_json(run_dir / "bench.json")
    assert doc["versions"]["sglang"] == version()
    assert doc["versions"]["torch"].startswith("2.")
    wheel = build_wheel(tmp_path)  # reproducible: the bytes provision installed
    assert doc["wheels"]["sglang"]["sha256"] == hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert doc["wheels"]["sglang"]["version"] == version()


def test_single_tile_csv_and_plot_parse(single_tile: tuple[Invocation, Path]) -> None:
    _, run_dir = single_tile
    with (run_dir / "bench.csv").open(newline="") as fh:
        (record,) = list(csv.DictReader(fh))
    doc = read_json(run_dir / "bench.json")
    assert record["name"] == "single-tile" and record["status"] == "ok"
    assert float(record["total_latency"]) == doc["rows"][0]["metrics"]["total_latency"]
    from matplotlib import image

    png = image.imread(run_dir / "bench.png")
    assert png.ndim == 3 and png.shape[0] > 100 and png.shape[1] > 100
    stdout_log = run_dir / "logs" / "00-one_batch.stdout"
    assert "Prefill. latency:" in stdout_log.read_text()


def test_node0_unreachable_exits_3_and_writes_no_run(
    provisioned_lab: Lab, runs_dir: Path, single_tile: tuple[Invocation, Path]
) -> None:
    before = run_dirs(runs_dir)
    with provisioned_lab.fault(1, "dead_node"):
        result = invoke(
            runs_dir,
            "bench",
            "--config",
            "single-tile",
            "--hosts",
            str(provisioned_lab.inventory_path),
            "--json",
        )
    assert result.code == 3, result.stdout + result.stderr
    doc = result.json()
    assert doc["hosts"]["node1"]["reachable"] is False
    assert doc["run_id"] is None and run_dirs(runs_dir) == before


# --------------------------------------------------------------------------- multi-node


def test_tp8_over_two_nodes_runs_bench_serving_against_the_launched_server(
    serving: ServingRuns, provisioned_lab: Lab
) -> None:
    bench = serving.bench
    assert bench.code == 0, bench.stdout + bench.stderr
    doc = bench.json()
    assert doc["simulated"] and "not Intel hardware" in doc["simulated"]
    rows = {r["config"]["name"]: r for r in doc["rows"]}
    assert set(rows) == {"single-tile", SERVING_CONFIG}
    assert rows["single-tile"]["kind"] == "one_batch" and rows["single-tile"]["status"] == "ok"
    row = rows[SERVING_CONFIG]
    assert (row["kind"], row["status"]) == ("serving", "ok"), row["message"]
    plan = read_json(serving.run_dir / "bench.json")["plan"]
    assert [(r["kind"], r["nnodes"]) for r in plan["runs"]] == [("one_batch", 1), ("serving", 2)]
    # the REAL client ran (its own prints), from the lab's sglang 0.4.3.post2 env
    log = next((serving.run_dir / "logs").glob("*-serving.stdout")).read_text()
    assert "Namespace(backend='sglang'" in log and "dataset_name='random'" in log
    assert "Initial test run completed. Starting main benchmark run..." in log
    client = doc_versions(serving.run_dir)["bench_serving"]
    assert client.startswith(f"sglang {SGLANG.split('==')[1]} (/var/cache/xpufleet-lab/")
    # the result block it printed, read back: the requested lengths (the client counts
    # the requested output; retokenized: what the stand-in sent, EOS kept under
    # ignore_eos is no text)
    block = parse_serving(log)
    assert block.successful_requests == 2
    assert block.total_input_tokens == 2 * 64
    assert block.total_generated_tokens == 2 * 8
    assert 0 < (block.total_generated_tokens_retokenized or 0) <= 2 * 8
    assert row["metrics"]["successful_requests"] == 2
    # the row holds the JSONL record's full-precision numbers, the block rounds them
    record = json.loads(next((serving.run_dir / "logs").glob("*-serving.jsonl")).read_text())
    assert record["backend"] == "sglang" and record["completed"] == 2
    assert row["metrics"]["median_e2e_latency"] == record["median_e2e_latency_ms"]
    assert round(record["median_e2e_latency_ms"], 2) == block.e2e_latency_ms.median  # type: ignore[union-attr]
    assert row["metrics"]["total_throughput"] == pytest.approx(
        (record["total_input_tokens"] + record["total_output_tokens"]) / record["duration"]
    )
    assert round(row["metrics"]["total_throughput"], 2) == block.total_throughput
    # on node 0: the staged dataset and the tool's own JSONL record, in the run's directory
    run_id = doc["run_id"]
    node1 = provisioned_lab.hosts()[0]
    from xpufleet.transport import Session

    with Session(node1, provisioned_lab.ssh_options()) as session:
        listing = session.run(
            f"ls /var/lib/xpufleet/runs/{run_id}/bench/1 && "
            f"tail -n 1 /var/lib/xpufleet/runs/{run_id}/bench/1/bench_serving.jsonl"
        ).stdout
    assert "sharegpt.json" in listing
    record = json.loads(listing.strip().splitlines()[-1])
    assert record["completed"] == 2 and record["random_input_len"] == 64


def test_a_config_the_launched_server_cannot_serve_is_named_not_measured(
    serving: ServingRuns,
) -> None:
    result = serving.wrong_tp
    assert result.code == 1, result.stdout + result.stderr
    (row,) = result.json()["rows"]
    assert row["status"] == "failed"
    assert "runs tp 8, this config needs tp 16" in row["message"]
    assert "invoke launch --tp 16 --nnodes 2" in row["message"]


# --------------------------------------------------------------------------- compare


def test_compare_prints_both_runs_side_by_side_with_percent_change(
    single_tile: tuple[Invocation, Path], serving: ServingRuns, runs_dir: Path
) -> None:
    a_dir, b_dir = single_tile[1], serving.run_dir
    human = invoke(runs_dir, "bench", "--compare", a_dir.name, "--compare", b_dir.name)
    assert human.code == 0, human.stderr
    text = human.stderr
    assert f"A={a_dir.name}" in text and f"B={b_dir.name}" in text
    assert "only in B" in text  # the serving config ran in B alone
    assert "SIMULATED" in text

    as_json = invoke(runs_dir, "bench", "--compare", a_dir.name, "--compare", str(b_dir), "--json")
    assert as_json.code == 0, as_json.stderr
    compared = {r["config"]: r for r in as_json.json()["compare"]["rows"]}
    a_metrics = read_json(a_dir / "bench.json")["rows"][0]["metrics"]
    b_rows = {r["config"]["name"]: r for r in read_json(b_dir / "bench.json")["rows"]}
    b_metrics = b_rows["single-tile"]["metrics"]
    changes = {m["metric"]: m for m in compared["single-tile"]["metrics"]}
    for metric in ("total_latency", "overall_throughput", "prefill_latency"):
        expected = (b_metrics[metric] - a_metrics[metric]) / a_metrics[metric] * 100
        assert changes[metric]["change_pct"] == pytest.approx(expected)
        # and the human table shows that percentage, signed, one decimal
        assert f"{expected:+.1f}%" in text
    assert compared[SERVING_CONFIG]["a_status"] is None
