"""Launch topology on the lab: each rank selects its own device (FLAT and COMPOSITE, in
ZE_AFFINITY_MASK order), and a split network: ranks meet on each node's fabric NIC,
and a wrong `nic` is caught by doctor and by the preflight, before any engine starts."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_launch import children_of, invoke, messages, rank_pids, start_ticks, wait_until

from xpufleet.lab import Lab, pid_alive

pytestmark = pytest.mark.lab

UUIDS = (
    "import json, os, torch; "
    "print(json.dumps([str(torch.xpu.get_device_properties(i).uuid) "
    "for i in range(torch.xpu.device_count())]))"
)


def node_uuids(lab: Lab, on: Any, node: int, hierarchy: str) -> list[str]:
    """The node's devices as Level Zero lists them without a mask (physical order)."""
    python = yaml.safe_load(lab.inventory_path.read_text())["all"]["vars"]["python"]
    got = on(node, f"ZE_FLAT_DEVICE_HIERARCHY={hierarchy} {python} -c '{UUIDS}'")
    assert got.exit_status == 0, got.stderr
    return json.loads(got.stdout.strip().splitlines()[-1])


def preflight_devices(doc: dict[str, Any], host: str) -> list[dict[str, Any]]:
    for result in doc["hosts"][host]["results"]:
        if result["id"] == "launch.preflight":
            return result["data"]["devices"]
    raise AssertionError(f"no launch.preflight result for {host}: {messages(doc)}")


@pytest.fixture(scope="module")
def composite(
    provisioned_lab: Lab, tmp_path_factory: pytest.TempPathFactory, inventory_with: Callable
) -> Path:
    return inventory_with(
        provisioned_lab,
        tmp_path_factory.mktemp("composite"),
        model_name="lab-tiny",
        device_hierarchy="COMPOSITE",
        device_ids=[3, 1],
        ready_timeout=240,
    )


def test_composite_ranks_select_their_cards_in_mask_order(
    provisioned_lab: Lab, composite: Path, on: Any
) -> None:
    try:
        code, doc = invoke(composite, "launch", "--tp", "4", "--nnodes", "2")
        assert code == 0, messages(doc) + doc["stderr"]
        cards = node_uuids(provisioned_lab, on, 2, "COMPOSITE")
        assert len(cards) == 4  # COMPOSITE: one device per card
        devices = preflight_devices(doc, "node2")
        # ZE_AFFINITY_MASK=3,1: xpu:0 is card 3, xpu:1 is card 1 (mask order, not index order)
        assert [(d["index"], d["physical"]) for d in devices] == [(0, 3), (1, 1)]
        assert [d["uuid"] for d in devices] == [cards[3], cards[1]]
        assert [d["current"] for d in devices] == [0, 1]
        # the engine's schedulers selected the same devices (stand-in, like model_runner.py)
        code, logs = invoke(composite, "logs")
        selected = {
            ln["rank"]: ln["line"] for ln in logs["lines"]
            if ln["host"] == "node2" and "Selected device" in ln["line"]
        }  # fmt: skip
        assert sorted(selected) == ["2", "3"]
        assert f"xpu:0: Intel(R) Data Center GPU Max 1550 uuid={cards[3]}" in selected["2"]
        assert f"uuid={cards[1]}" in selected["3"]
    finally:
        invoke(composite, "stop")


def test_two_tiles_of_one_card_started_out_of_order_keep_their_ranks(
    provisioned_lab: Lab, tmp_path_factory: pytest.TempPathFactory, inventory_with: Callable
) -> None:
    """FLAT, both local ranks on the two tiles of card 0 (xpu:0 = tile 0, xpu:1 = tile 1),
    node2's stand-in starting its schedulers in reverse (lab fault): xpu-smi ps shows both
    on card 0, start order is wrong, only the server's spawn record tells them apart. The
    scheduler started last is rank 2; killed, it is named as rank 2."""
    inventory = inventory_with(
        provisioned_lab,
        tmp_path_factory.mktemp("one-card"),
        model_name="lab-tiny",
        device_ids=[0, 1],
        ready_timeout=240,
    )
    try:
        with provisioned_lab.fault(2, "scheduler_spawn_order", "reverse"):
            code, doc = invoke(inventory, "launch", "--tp", "4", "--nnodes", "2")
        assert code == 0, messages(doc) + doc["stderr"]
        devices = preflight_devices(doc, "node2")
        assert [(d["index"], d["physical"]) for d in devices] == [(0, 0), (1, 1)]
        assert len({d["uuid"] for d in devices}) == 2  # two devices (tiles), not one
        code, status = invoke(inventory, "status")
        assert code == 0, messages(status)
        pids = rank_pids(status)
        rows = {r["id"]: r for r in status["hosts"]["node2"]["results"]}
        assert rows["status.ranks"]["message"] == (
            "ranks by the rank the server started each process for (its spawn record); "
            "each on its planned card (xpu-smi ps)"
        ), messages(status)
        server = int(Path(f"/proc/{pids[2]}/stat").read_text().rsplit(")", 1)[1].split()[1])
        schedulers = [
            pid
            for pid in sorted(children_of(server), key=lambda pid: (start_ticks(pid), pid))
            if pid in (pids[2], pids[3])
        ]
        assert schedulers == [pids[3], pids[2]]  # started in reverse
        os.kill(pids[2], signal.SIGKILL)
        assert wait_until(lambda: not any(pid_alive(p) for p in pids.values()), 30)
        code, status = invoke(inventory, "status")
        assert code == 1
        death = status["first_death"]
        assert (death["host"], death["rank"], death["pid"]) == ("node2", 2, pids[2])
    finally:
        invoke(inventory, "stop")


def test_ranks_on_other_cards_than_planned_fail_the_launch_and_stop_it(
    provisioned_lab: Lab, composite: Path
) -> None:
    """node2's stand-in schedulers select the device one past SGLang's gpu_id (lab fault
    `scheduler_device_shift`): with ZE_AFFINITY_MASK=3,1, rank 2 lands on card 1 and
    rank 3 on card 3, the other way round from the plan. The supervisor knows each rank's
    process from the spawn record and reads its card in the lab's xpu-smi ps."""
    try:
        with provisioned_lab.fault(2, "scheduler_device_shift", 1):
            code, doc = invoke(composite, "launch", "--tp", "4", "--nnodes", "2")
    finally:
        invoke(composite, "stop")
    assert code == 1, messages(doc)
    rows = {h: {r["id"]: r for r in d["results"]} for h, d in doc["hosts"].items()}
    wrong = rows["node2"]["launch.devices"]
    assert wrong["status"] == "fail", messages(doc)
    message = wrong["message"]
    assert (
        "rank 2 (pid " in message and "works on device 1, the plan puts it on device 3" in message
    )
    assert (
        "rank 3 (pid " in message and "works on device 3, the plan puts it on device 1" in message
    )
    assert rows["node1"]["launch.ranks"]["status"] == "ok"
    cluster = {r["id"]: r for r in doc["cluster"]}
    assert cluster["launch.devices"]["status"] == "fail"
    assert "every rank was stopped" in cluster["launch.devices"]["message"]
    assert not doc.get("ready") and "launch.endpoint" not in cluster
    code, status = invoke(composite, "status")
    assert not [line for line in messages(status).splitlines() if " pass running" in line], (
        messages(status)
    )


def test_wrong_nic_is_caught_by_doctor_and_by_the_preflight(
    provisioned_lab: Lab, tmp_path_factory: pytest.TempPathFactory, inventory_with: Callable
) -> None:
    """Node 0's `nic` set to `lo` while the rendezvous address is on its fabric NIC."""
    directory = tmp_path_factory.mktemp("wrong-nic")
    inventory = inventory_with(provisioned_lab, directory, model_name="lab-tiny")
    (directory / "host_vars").mkdir()
    (directory / "host_vars" / "node1.yaml").write_text("nic: lo\n")
    rendezvous = provisioned_lab.fabric_address(1)

    code, doc = invoke(inventory, "doctor", "--limit", "node1,node2")
    assert code == 1
    nic = {h: [r for r in d["results"] if r["id"] == "net.nic"][0] for h, d in doc["hosts"].items()}
    assert nic["node1"]["status"] == "fail"
    assert f"expected lo to carry the rendezvous address {rendezvous}" in nic["node1"]["message"]
    # node2's fabric NIC is in node 0's fabric subnet: fine
    assert nic["node2"]["status"] == "pass", nic["node2"]

    try:
        code, doc = invoke(inventory, "launch", "--tp", "4", "--nnodes", "2")
        assert code == 1
        text = messages(doc)
        assert "nic lo (" in text and f"does not carry the rendezvous address {rendezvous}" in text
        assert "launch.preflight fail preflight failed" in text
        assert not doc.get("ready")
    finally:
        invoke(inventory, "stop")
