"""The preflight script on this machine (no SSH): two "nodes" as two processes, real
torch.distributed gloo, and the hand-over to the engine only when the preflight passed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from xpufleet.host import Host
from xpufleet.launch.plan import plan_launch
from xpufleet.launch.remote import preflight
from xpufleet.launch.render import node_config

SCRIPT = Path(preflight.__file__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_configs(tmp_path: Path, timeout: float) -> list[Path]:
    """run.json of a 2-node, tp 4 plan whose rendezvous is on this machine."""
    hosts = [
        Host(
            f"node{i}",
            "127.0.0.1",
            vars={
                "nic": "lo",
                "device": "cpu",
                "dist_backend": "gloo",
                "model_size_gb": 0.01,
                "rendezvous_port": free_port(),
                "preflight_timeout": timeout,
            },
        )
        for i in (1, 2)
    ]
    plan = plan_launch(hosts, 4, 2)
    paths = []
    for node in plan.nodes:
        directory = tmp_path / node.host
        directory.mkdir()
        (directory / "run.json").write_text(json.dumps(node_config(plan, node, "t")))
        paths.append(directory / "run.json")
    return paths


def start(run_json: Path, *then: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(run_json), *then],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_nodes_pass_and_hand_over_to_the_engine_module(tmp_path: Path) -> None:
    configs = write_configs(tmp_path, timeout=60)
    # `-m json.tool FILE` stands in for `-m sglang.launch_server ARGS`: it runs only if
    # the preflight passed, in the same process
    procs = [start(c, "--then", "-m", "json.tool", str(c)) for c in configs]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert '"run_id": "t"' in out  # json.tool ran: the hand-over happened
        assert "xpufleet preflight: passed" in err
    reports = [json.loads((c.parent / "preflight.json").read_text()) for c in configs]
    assert all(r["ok"] for r in reports)
    assert [r["rank"] for r in reports[1]["ranks"]] == [2, 3]
    timings = reports[0]["ranks"][0]["timings"]
    assert [t["bytes"] for t in timings] == [4096, 262144, 4194304]
    assert all(t["busbw_gbps"] == pytest.approx(t["algbw_gbps"] * 1.5) for t in timings)


def test_a_node_alone_never_hands_over_and_reports_who_never_joined(tmp_path: Path) -> None:
    configs = write_configs(tmp_path, timeout=4)
    proc = start(configs[1], "--then", "-m", "json.tool", str(configs[1]))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == preflight.PREFLIGHT_FAILED
    assert out == ""  # the engine module never ran
    assert "FAILED on rank 2 at connect" in err
    report = json.loads((configs[1].parent / "preflight.json").read_text())
    assert not report["ok"]
    assert {r["kind"] for r in report["ranks"]} == {"refused"}  # nobody listened on node1


def test_preflight_alone_prints_its_report(tmp_path: Path) -> None:
    configs = write_configs(tmp_path, timeout=5)
    proc = start(configs[0])
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1
    doc = json.loads(out)
    assert doc["ranks"][0]["missing_ranks"] == [2, 3]


def test_preflight_checks_the_planned_nic_before_any_rank_starts() -> None:
    def cfg(nic: str, address: str, node_rank: int) -> dict:
        return {
            "env": {"GLOO_SOCKET_IFNAME": nic},
            "rendezvous": {"address": address, "port": 1},
            "node_rank": node_rank,
        }

    assert preflight.check_nic(cfg("lo", "127.0.0.1", 0)) is None
    assert preflight.check_nic(cfg("lo", "127.0.0.1", 1)) is None
    reason = preflight.check_nic(cfg("lo", "10.99.0.1", 0))
    assert reason and "does not carry the rendezvous address 10.99.0.1" in reason
    reason = preflight.check_nic(cfg("lo", "10.99.0.1", 1))
    assert reason and "no address in the subnet" in reason
    reason = preflight.check_nic(cfg("hsn-nonexistent", "127.0.0.1", 0))
    assert reason and "does not exist" in reason
