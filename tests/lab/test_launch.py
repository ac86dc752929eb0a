"""`invoke launch / status / stop / logs` on the lab: real sshd per node, the SGLang
stand-in installed by provision, real torch.distributed (gloo) across the nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from xpufleet.lab import Lab, pid_alive
from xpufleet.lab.standin import SOURCE_DIR
from xpufleet.launch.remote.supervisor import port_holders

pytestmark = pytest.mark.lab

import openai  # noqa: E402

sys.path.insert(0, str(SOURCE_DIR))
from sglang.srt.model import apply_chat_template, reference_completion  # noqa: E402

INVOKE = str(Path(sys.executable).parent / "invoke")
MODEL = "lab-tiny"
DEVICE_IDS = [6, 4, 2, 0]


@pytest.fixture(scope="module")
def inventory(launch_inventory: Path) -> Path:
    """The session's launch inventory (tests/lab/conftest.py): model MODEL, a patient
    ready timeout, the node's devices in reverse card order (ZE_AFFINITY_MASK 6,4,2,0 on
    FLAT Max 1550 nodes: local rank l on tile 6-2l, one card each)."""
    return launch_inventory


def invoke(inventory: Path, *args: str, timeout: float = 600) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [INVOKE, *args, "--hosts", str(inventory), "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except ValueError:
        doc = {"raw": proc.stdout}
    doc.setdefault("stderr", proc.stderr)
    return proc.returncode, doc


def messages(doc: dict[str, Any]) -> str:
    items = [r for h in doc.get("hosts", {}).values() for r in h.get("results", [])]
    items += doc.get("cluster", [])
    return "\n".join(f"{r['id']} {r['status']} {r['message']}" for r in items)


def rank_pids(status: dict[str, Any]) -> dict[int, int]:
    pids = {}
    for host in status["hosts"].values():
        for result in host["results"]:
            if result["id"].startswith("status.rank."):
                pids[int(result["data"]["rank"])] = int(result["data"]["pid"])
    return pids


def children_of(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()


def wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.fixture
def launched(inventory: Path) -> Iterator[Any]:
    """Launch with the given flags; whatever happens, stop everything afterwards."""
    started: list[dict[str, Any]] = []

    def start(*flags: str) -> tuple[int, dict[str, Any]]:
        code, doc = invoke(inventory, "launch", *flags)
        started.append(doc)
        return code, doc

    try:
        yield start
    finally:
        invoke(inventory, "stop")


@pytest.fixture
def shared_launch(tp8_two_nodes: Any) -> Iterator[Any]:
    """The session's tp 8 launch over two nodes (tests/lab/conftest.py), which test_bench.py
    measured against first; the test that takes it ends it, whatever happens."""
    try:
        yield tp8_two_nodes
    finally:
        if tp8_two_nodes.live:
            tp8_two_nodes.stop()


def chat_matches_tp1(base_url: str) -> None:
    client = openai.OpenAI(base_url=base_url, api_key="lab", timeout=120)
    chat = [{"role": "user", "content": "Which ranks answer this?"}]
    reply = client.chat.completions.create(model=MODEL, messages=chat, max_tokens=16)
    assert reply.choices[0].message.content == reference_completion(apply_chat_template(chat), 16)
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_tp8_over_two_nodes_serves_the_openai_api_and_stops_clean(
    provisioned_lab: Lab, inventory: Path, shared_launch: Any, follow_then_interrupt: Any
) -> None:
    code, doc = shared_launch.get()
    assert code == 0, messages(doc) + doc["stderr"]
    assert doc["ready"] is True
    chat_matches_tp1(doc["base_url"])
    # split network: ranks met on node1's fabric NIC, not on the SSH address
    assert doc["plan"]["rendezvous_address"] == provisioned_lab.fabric_address(1)
    # FLAT: every rank on its own tile, xpu:0..3 = tiles 6, 4, 2, 0 of the node (the mask)
    for host in ("node1", "node2"):
        devices = [
            r["data"]["devices"]
            for r in doc["hosts"][host]["results"]
            if r["id"] == "launch.preflight"
        ][0]
        assert [(d["index"], d["physical"]) for d in devices] == list(enumerate(DEVICE_IDS))
        assert len({d["uuid"] for d in devices}) == 4

    code, status = invoke(inventory, "status")
    assert code == 0, messages(status)
    pids = rank_pids(status)
    assert sorted(pids) == list(range(8))
    assert all(pid_alive(pid) for pid in pids.values())

    code, second = invoke(inventory, "launch", "--tp", "8", "--nnodes", "2")
    assert code == 1
    assert "locked by launch" in messages(second)
    assert all(pid_alive(pid) for pid in pids.values()), "the refused launch touched the run"

    follow_then_interrupt(inventory)

    code, stopped = shared_launch.stop()
    assert code == 0, messages(stopped)
    assert not any(pid_alive(pid) for pid in pids.values())
    addresses = [n["http_address"] for n in doc["plan"]["nodes"]]
    ports = provisioned_lab.launch_ports()
    assert all(not port_holders(address, ports["sglang_port"]) for address in addresses)
    assert not port_holders(doc["plan"]["rendezvous_address"], ports["rendezvous_port"])
    code, again = invoke(inventory, "stop")
    assert code == 0, messages(again)
    code, logs = invoke(inventory, "logs")
    assert code == 0
    ready = [ln for ln in logs["lines"] if "The server is fired up" in ln["line"]]
    assert [(ln["host"], ln["rank"]) for ln in ready] == [("node1", "main")]
    assert any(ln["host"] == "node2" and ln["rank"] == "7" for ln in logs["lines"])


def test_plan_prints_and_starts_nothing(provisioned_lab: Lab, inventory: Path) -> None:
    code, doc = invoke(inventory, "launch", "--tp", "8", "--nnodes", "2", "--plan")
    assert code == 0, doc["stderr"]
    plan = doc["plan"]
    assert [n["node_rank"] for n in plan["nodes"]] == [0, 1]
    # the lab's own ports: other labs on this machine may launch at the same time
    ports = provisioned_lab.launch_ports()
    assert plan["dist_init_addr"].endswith(f":{ports['rendezvous_port']}")
    assert plan["base_url"].endswith(f":{ports['sglang_port']}/v1")
    assert "--node-rank" in plan["nodes"][1]["argv"]
    code, status = invoke(inventory, "status")
    assert code in (0, 1)  # an earlier, ended run may be on record
    assert not [line for line in messages(status).splitlines() if " pass running" in line]


def test_tp8_over_four_nodes_and_a_killed_rank_stops_every_rank(
    provisioned_lab: Lab, inventory: Path, launched: Any
) -> None:
    """node3's stand-in starts its schedulers out of rank order (lab fault
    `scheduler_spawn_order`) and node3 has no xpu-smi: the supervisor must take each rank
    from what the server started it for, not from when it started (the cards would not
    tell either; test_launch_topology.py has the tiles of one card)."""
    with (
        provisioned_lab.fault(3, "scheduler_spawn_order", "reverse"),
        provisioned_lab.fault(3, "missing_xpu_smi"),
    ):
        code, doc = launched("--tp", "8", "--nnodes", "4")
    assert code == 0, messages(doc) + doc["stderr"]
    chat_matches_tp1(doc["base_url"])
    code, status = invoke(inventory, "status")
    pids = rank_pids(status)
    assert sorted(pids) == list(range(8))
    # ranks by the server's spawn record, each rank's card checked in xpu-smi ps (the lab's
    # xpu-smi ps answers from the stand-in's set_device); helpers named per node and
    # never counted as ranks
    rows = {h: {r["id"]: r for r in status["hosts"][h]["results"]} for h in status["hosts"]}
    spawned = "ranks by the rank the server started each process for (its spawn record); "
    for host in ("node1", "node2", "node4"):
        assert rows[host]["status.ranks"]["message"] == (
            spawned + "each on its planned card (xpu-smi ps)"
        ), messages(status)
        assert "status.devices" not in rows[host]
    # node3 has no xpu-smi: its ranks are still known, its cards not checked
    assert rows["node3"]["status.ranks"]["message"] == (
        spawned + "devices: not checked, no xpu-smi on this node"
    )
    helpers = {h: sorted(i for i in rows[h] if i.startswith("status.helper.")) for h in rows}
    assert helpers["node1"] == ["status.helper.detokenizer", "status.helper.resource_tracker"]
    assert helpers["node3"] == ["status.helper.resource_tracker"]
    tracker = rows["node3"]["status.helper.resource_tracker"]["data"]["pid"]
    assert tracker not in pids.values()

    # the fork's layout on node3 (ranks 4, 5), seen in /proc, not through the supervisor:
    # the server's children are the resource tracker (first), two untitled-index
    # schedulers, nothing else (the detokenizer runs on node 0 only)
    server = int(Path(f"/proc/{pids[4]}/stat").read_text().rsplit(")", 1)[1].split()[1])
    children = sorted(children_of(server), key=lambda pid: (start_ticks(pid), pid))
    titles = [cmdline(pid) for pid in children]
    assert "multiprocessing.resource_tracker" in titles[0]
    assert titles[1:] == ["sglang::scheduler", "sglang::scheduler"]
    assert children[0] == tracker
    # the scheduler started last is rank 4 (started in reverse); start order would call
    # it rank 5 and blame rank 5 for its death
    victim = children[-1]
    assert pids[4] == victim, (pids, children)
    os.kill(victim, signal.SIGKILL)
    assert wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 30), (
        "ranks still running after a rank died"
    )
    code, status = invoke(inventory, "status")
    assert code == 1
    death = status["first_death"]
    assert (death["host"], death["rank"], death["pid"]) == ("node3", 4, victim)
    assert death["exit"]["signal"] == "SIGKILL"
    assert "first to die: rank 4 on node3" in messages(status)


def test_blocked_rendezvous_port_fails_preflight_naming_the_node(
    provisioned_lab: Lab, inventory: Path, launched: Any
) -> None:
    with provisioned_lab.fault(1, "blocked_port"):  # the lab's rendezvous_port
        code, doc = launched("--tp", "8", "--nnodes", "2")
    assert code == 1
    text = messages(doc)
    assert "launch.preflight fail preflight failed" in text
    assert "never joined" in text
    assert f"port {provisioned_lab.launch_ports()['rendezvous_port']} on node1" in text
    assert doc.get("ready") is False or "ready" not in doc
    code, status = invoke(inventory, "status")
    assert not [line for line in messages(status).splitlines() if " pass running" in line]
