"""The stand-in as operators meet it: `python -m sglang.launch_server` on two "nodes"
(two processes, one torch.distributed group), the OpenAI client, and bench_one_batch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import openai  # noqa: E402
import pytest

from xpufleet.lab import pid_alive
from xpufleet.lab.standin import SOURCE_DIR

sys.path.insert(0, str(SOURCE_DIR))

from sglang.srt.model import apply_chat_template, reference_completion  # noqa: E402
from sglang.srt.utils import free_port  # noqa: E402

READY = "The server is fired up and ready to roll!"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SOURCE_DIR)}


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return 0


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    logs = tmp_path_factory.mktemp("standin")
    init = f"127.0.0.1:{free_port()}"
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    for node_rank, port in enumerate(ports):
        argv = [
            sys.executable,
            "-m",
            "sglang.launch_server",
            "--model",
            "/models/lab-tiny",
            "--served-model-name",
            "lab-tiny",
            "--tp-size",
            "4",
            "--nnodes",
            "2",
            "--node-rank",
            str(node_rank),
            "--dist-init-addr",
            init,
            "--device",
            "cpu",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--trust-remote-code",
        ]
        log = open(logs / f"node{node_rank}.log", "wb")  # noqa: SIM115 - closed below
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=_env()))
        log.close()
    deadline = time.monotonic() + 120
    while READY not in (logs / "node0.log").read_text() and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), (logs / "node0.log").read_text()
        time.sleep(0.2)
    ranks = {p.pid: _children(p.pid) for p in procs}
    try:
        yield {"ports": ports, "procs": procs, "logs": logs, "ranks": ranks}
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            proc.wait(20)


def test_node0_logs_like_sglang_and_becomes_ready(two_nodes: dict) -> None:
    text = (two_nodes["logs"] / "node0.log").read_text()
    assert READY in text
    assert re.search(
        r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d TP0\] Init torch distributed begin\.$",
        text,
        re.MULTILINE,
    )
    assert "Uvicorn running on http://127.0.0.1:" in text
    node1 = (two_nodes["logs"] / "node1.log").read_text()
    assert "TP3] Init torch distributed ends." in node1
    assert READY not in node1


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def test_each_node_has_the_forks_process_layout(two_nodes: dict) -> None:
    """As the fork: spawn start method (CPython's resource tracker is the FIRST child),
    schedulers titled `sglang::scheduler` without a rank index, and on node 0 only a
    `sglang::detokenizer` after them (entrypoints/engine.py, managers/scheduler.py)."""
    layouts = []
    for server in (p.pid for p in two_nodes["procs"]):
        children = sorted(two_nodes["ranks"][server], key=lambda pid: (start_ticks(pid), pid))
        layouts.append([_cmdline(pid) for pid in children])
    node0, node1 = layouts
    for layout in layouts:
        assert "multiprocessing.resource_tracker" in layout[0]
        assert layout[1:3] == ["sglang::scheduler", "sglang::scheduler"]
    assert node0[3:] == ["sglang::detokenizer"]
    assert node1[3:] == []


def start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_supervisor_names_ranks_by_title_spawn_order_and_log_prefix(two_nodes: dict) -> None:
    from xpufleet.launch.engines.sglang import PATTERNS
    from xpufleet.launch.remote import supervisor

    patterns = supervisor.Patterns(PATTERNS.to_json())

    for node_rank, proc in enumerate(two_nodes["procs"]):
        children = [
            (pid, supervisor.process_names(pid), supervisor.start_time(pid) or 0.0)
            for pid in two_nodes["ranks"][proc.pid]
        ]
        tags = supervisor.log_tags(two_nodes["logs"] / f"node{node_rank}.log", patterns.log_prefix)
        ranks = [2 * node_rank, 2 * node_rank + 1]
        found, helpers, waiting = supervisor.assign_ranks(children, ranks, tags, patterns)
        assert waiting is None
        assert sorted(found) == ranks
        # the resource tracker and the detokenizer are helpers, never ranks
        assert sorted(helpers.values()) == (
            ["detokenizer", "resource tracker"] if node_rank == 0 else ["resource tracker"]
        )
        assert not set(helpers) & set(found.values())
        # each rank's pid is a scheduler that logged as TP<rank>
        for pid in found.values():
            assert _cmdline(pid) == "sglang::scheduler"


def test_health_endpoints_on_both_nodes(two_nodes: dict) -> None:
    node0, node1 = two_nodes["ports"]
    assert _status(f"http://127.0.0.1:{node0}/health_generate") == 200
    assert _status(f"http://127.0.0.1:{node1}/health") == 200
    assert _status(f"http://127.0.0.1:{node1}/health_generate") == 200
    assert _status(f"http://127.0.0.1:{node1}/v1/models") == 0  # 404: dummy server only


def test_openai_chat_across_two_nodes_matches_tp1(two_nodes: dict) -> None:
    port = two_nodes["ports"][0]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    assert [m.id for m in client.models.list().data] == ["lab-tiny"]
    messages = [{"role": "user", "content": "Say something about tensor parallelism."}]
    reply = client.chat.completions.create(model="lab-tiny", messages=messages, max_tokens=20)
    expected = reference_completion(apply_chat_template(messages), 20)
    assert reply.choices[0].message.content == expected
    assert reply.usage.completion_tokens == len(expected)
    completion = client.completions.create(model="lab-tiny", prompt="abc", max_tokens=7)
    assert completion.choices[0].text == reference_completion("abc", 7)


def test_streaming_chat_gives_the_same_text(two_nodes: dict) -> None:
    port = two_nodes["ports"][0]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")
    messages = [{"role": "user", "content": "stream"}]
    stream = client.chat.completions.create(
        model="lab-tiny", messages=messages, max_tokens=12, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == reference_completion(apply_chat_template(messages), 12)


def test_native_generate_and_info_endpoints(two_nodes: dict) -> None:
    port = two_nodes["ports"][0]
    body = json.dumps({"text": "xyz", "sampling_params": {"max_new_tokens": 5}}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/generate", data=body)
    doc = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert doc["text"] == reference_completion("xyz", 5)
    assert doc["meta_info"]["finish_reason"]["type"] == "length"
    info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/get_server_info").read())
    assert (info["tp_size"], info["nnodes"], info["version"]) == (4, 2, "0.4.3.post2+xpufleetlab")


def test_a_killed_rank_brings_its_peers_down(two_nodes: dict) -> None:
    """Runs last in this module: a dead rank breaks the group; the others must not hang."""
    node1 = two_nodes["ranks"][two_nodes["procs"][1].pid]
    victim = next(pid for pid in node1 if _cmdline(pid) == "sglang::scheduler")
    os.kill(victim, signal.SIGKILL)
    node0 = two_nodes["procs"][0]
    node0.wait(30)
    assert node0.returncode != 0
    text = (two_nodes["logs"] / "node0.log").read_text()
    assert "Scheduler hit an exception" in text
    ranks = two_nodes["ranks"][node0.pid]
    deadline = time.monotonic() + 10  # SIGKILLed by their server: gone in a moment
    while any(pid_alive(r) for r in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(pid_alive(r) for r in ranks)


def test_bench_one_batch_prints_the_forks_format(tmp_path: Path) -> None:
    result = tmp_path / "result.jsonl"
    argv = [
        sys.executable,
        "-m",
        "sglang.bench_one_batch",
        "--batch-size",
        "1",
        "--input",
        "32",
        "--output",
        "8",
        "--model",
        "lab-tiny",
        "--trust-remote-code",
        "--device",
        "xpu",
        "--tp-size",
        "2",
        "--result-filename",
        str(result),
    ]
    out = subprocess.run(
        argv, capture_output=True, text=True, env=_env(), timeout=180, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert "max_total_num_tokens=65536" in lines
    assert "Benchmark ..." in lines
    assert re.search(
        r"^Prefill\. latency: +\d+\.\d{5} s, throughput: +\d+\.\d\d token/s$",
        out.stdout,
        re.MULTILINE,
    )
    decode = [ln for ln in lines if re.match(r"^Decode\.  latency: ", ln)]
    assert len(decode) == 5
    assert re.search(
        r"^Decode\.  median latency: .* median throughput: .* token/s$", out.stdout, re.MULTILINE
    )
    assert re.search(r"^Total\. latency: +\d+\.\d{3} s", out.stdout, re.MULTILINE)
    record = json.loads(result.read_text().splitlines()[-1])
    assert set(record) == {
        "run_name",
        "batch_size",
        "input_len",
        "output_len",
        "prefill_latency",
        "prefill_throughput",
        "median_decode_latency",
        "median_decode_throughput",
        "total_latency",
        "overall_throughput",
    }
    assert (record["batch_size"], record["input_len"], record["output_len"]) == (1, 32, 8)
