"""model.stage on the lab: from the control node and from a node, the relay order with a
node killed mid-transfer, resume after a cut, a no-op rerun, the three model faults
caught by doctor and repaired by staging, the shared file system, and two streams."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from xpufleet.doctor import run_doctor
from xpufleet.inventory import load_inventory
from xpufleet.lab import Lab
from xpufleet.lab.model import LAB_MODEL, write_model
from xpufleet.relay import file_hash
from xpufleet.stage import parse_source, stage_model, streams_for

BIG = "/models/xpufleet-stage-big"


def hosts_for(lab: Lab, inventory_with: Callable[..., Path], tmp: Path, **over: Any) -> list:
    tmp.mkdir(exist_ok=True)
    return load_inventory(inventory_with(lab, tmp, **over)).select(None)


def by_id(report: Any, check_id: str) -> dict[str, Any]:
    out = {h: r for h, host in report.hosts.items() for r in host.results if r.id == check_id}
    for item in report.cluster:
        if item.id == check_id:
            out["cluster"] = item
    return out


def cleanup(lab: Lab, path: str) -> None:
    for i in range(1, 5):
        os.system(f"rm -rf {lab.node_dir(i)}/fs{path}")


def test_faults_caught_by_doctor_and_repaired_by_staging_then_noop(
    lab: Lab, inventory_with: Callable[..., Path], tmp_path: Path
) -> None:
    hosts = hosts_for(lab, inventory_with, tmp_path)
    source = parse_source(str(lab.model_source), hosts)
    with (
        lab.fault("node2", "model_missing_shard"),
        lab.fault("node3", "model_short_shard"),
        lab.fault("node4", "model_other_shard"),
    ):
        doctor = run_doctor(hosts, lab.ssh_options())
        files = by_id(doctor, "model.files")
        assert files["node1"].status == "pass"
        assert "missing model-00002-of-00003.safetensors" in files["node2"].message
        assert "model-00002-of-00003.safetensors short" in files["node3"].message
        assert "changed since staged" in files["node4"].message
        same = by_id(doctor, "model.same")["cluster"]
        assert same.status == "fail" and set(same.data["odd"]) >= {"node2", "node3"}

        staged = stage_model(hosts, lab.ssh_options(), source)
        assert staged.exit_code() == 0, staged.to_json()
        shard = lab.model_source / "model-00002-of-00003.safetensors"
        info = staged.extra["stage"]
        assert info["control_bytes"] == shard.stat().st_size  # one copy, relayed
        assert by_id(staged, "model.stage")["node1"].status == "ok"
        for name in ("node2", "node3", "node4"):
            item = by_id(staged, "model.stage")[name]
            assert item.status == "changed" and item.data["received"] == [shard.name]
        assert info["rounds"][0]["tree"] == {"node2": ["node3"], "node3": ["node4"], "node4": []}

        after = run_doctor(hosts, lab.ssh_options())
        assert {r.status for r in by_id(after, "model.files").values()} == {"pass"}
        assert by_id(after, "model.same")["cluster"].status == "pass"

        again = stage_model(hosts, lab.ssh_options(), source)
        assert again.extra["stage"]["control_bytes"] == 0
        assert again.extra["stage"]["rounds"] == []
        assert {r.status for r in by_id(again, "model.stage").values()} == {"ok"}


@pytest.mark.parametrize("streams", [1, 2])
def test_relay_goes_around_a_node_killed_mid_transfer(
    lab: Lab, inventory_with: Callable[..., Path], tmp_path: Path, streams: int
) -> None:
    big = write_model(tmp_path / "big", shards=3, shard_bytes=6 << 20)
    hosts = hosts_for(lab, inventory_with, tmp_path / "inv", model_path=BIG)
    pids: dict[str, list[int]] = {}
    killed: list[int] = []
    total = sum(p.stat().st_size for p in big.iterdir() if p.is_file())
    links: list[str] = []
    linked = threading.Event()

    def on_event(name: str, event: dict[str, Any]) -> None:
        if event.get("event") == "listen":
            pids.setdefault(name, []).append(int(event["pid"]))
        if event.get("event") == "link":
            links.append(name)
            if len(links) == 3 * streams:  # node1 -> ... -> node4 in every stream
                linked.set()

    def on_sent(sent: int) -> None:
        if not killed and sent >= total // (2 * streams):  # every stream still flowing
            assert linked.wait(60), f"links: {links}"
            for pid in pids["node2"]:  # the node dies: its relay in every stream
                os.kill(pid, signal.SIGKILL)
            killed.append(sent)

    try:
        report = stage_model(
            hosts,
            lab.ssh_options(),
            parse_source(str(big), hosts),
            streams=streams,
            on_sent=on_sent,
            on_event=on_event,
        )
        assert killed, "node2 was never killed"
        results = by_id(report, "model.stage")
        assert results["node2"].status == "failed" and "killed" in results["node2"].message
        round0 = report.extra["stage"]["rounds"][0]
        assert round0["tree"]["node1"] == ["node2"]
        assert round0["nodes"]["node1"]["lost"] == ["node2"]
        assert round0["nodes"]["node3"]["fed_by"] == "node1"  # fed by the one before
        for chain in round0["chains"]:  # in every stream
            assert chain["lost"] == {"node1": ["node2"]} and chain["fed_by"]["node3"] == "node1"
        for name in ("node1", "node3", "node4"):
            assert results[name].status == "changed", results[name].message
            assert len(results[name].data["received"]) == 7
        assert report.extra["stage"]["control_bytes"] <= 1.1 * total
        rerun = stage_model(hosts, lab.ssh_options(), parse_source(str(big), hosts))
        statuses = {h: r.status for h, r in by_id(rerun, "model.stage").items()}
        assert statuses == {"node1": "ok", "node2": "changed", "node3": "ok", "node4": "ok"}
    finally:
        cleanup(lab, BIG)


class Cut(Exception):
    pass


def test_resume_after_a_cut_sends_only_files_not_yet_complete(
    lab: Lab, inventory_with: Callable[..., Path], tmp_path: Path
) -> None:
    big = write_model(tmp_path / "big", shards=3, shard_bytes=4 << 20)
    hosts = hosts_for(lab, inventory_with, tmp_path / "inv", model_path=BIG)
    order = sorted(p.name for p in big.iterdir() if p.is_file() and not p.name.startswith("."))
    sizes = {n: (big / n).stat().st_size for n in order}
    first = "model-00001-of-00003.safetensors"
    upto = sum(sizes[n] for n in order[: order.index(first) + 1])
    # nodes forward a block before they write it, so node4 may finish the first shard
    # before node1 does: the cut waits until EVERY node has renamed it into place
    have_first: set[str] = set()
    all_have_first = threading.Event()

    def on_event(name: str, event: dict[str, Any]) -> None:
        if event.get("event") == "file" and event["name"] == first:
            have_first.add(name)
            if len(have_first) == 4:
                all_have_first.set()

    def on_sent(sent: int) -> None:
        if sent >= upto + (1 << 20):
            assert all_have_first.wait(120), f"only {sorted(have_first)} completed the first shard"
            raise Cut("the control node stops here")

    try:
        with pytest.raises(Cut):
            stage_model(
                hosts, lab.ssh_options(), parse_source(str(big), hosts),
                on_sent=on_sent, on_event=on_event,
            )  # fmt: skip
        rerun = stage_model(hosts, lab.ssh_options(), parse_source(str(big), hosts))
        assert rerun.exit_code() == 0, rerun.to_json()
        needs = rerun.extra["stage"]["rounds"][0]["needs"]
        for name in ("node1", "node2", "node3", "node4"):
            assert "config.json" not in needs[name] and first not in needs[name], needs[name]
        expected = sum(size for n, size in sizes.items() if n not in ("config.json", first))
        assert rerun.extra["stage"]["control_bytes"] == expected
        leftovers = [p for i in range(1, 5) for p in (lab.node_dir(i) / f"fs{BIG}").glob(".*part")]
        assert leftovers == []
    finally:
        cleanup(lab, BIG)


@pytest.mark.parametrize("streams", [1, 2])
def test_stage_from_a_node_sends_nothing_from_the_control_node(
    lab: Lab, inventory_with: Callable[..., Path], tmp_path: Path, streams: int
) -> None:
    hosts = hosts_for(lab, inventory_with, tmp_path, model_path="/models/xpufleet-copy")
    try:
        source = parse_source(f"node1:/models/{LAB_MODEL}", hosts)
        report = stage_model(hosts, lab.ssh_options(), source, fanout=2, streams=streams)
        assert report.exit_code() == 0, report.to_json()
        info = report.extra["stage"]
        assert info["control_bytes"] == 0
        assert len(info["rounds"][0]["chains"]) == streams
        for tree in [info["rounds"][0]["tree"]] + [c["tree"] for c in info["rounds"][0]["chains"]]:
            assert tree["node1"] == ["node2", "node3"] and tree["node2"] == ["node4"]
        for name in ("node1", "node2", "node3", "node4"):
            assert by_id(report, "model.stage")[name].status == "changed"
        doctor = run_doctor(hosts, lab.ssh_options())
        assert {r.status for r in by_id(doctor, "model.files").values()} == {"pass"}
    finally:
        cleanup(lab, "/models/xpufleet-copy")


def test_shared_file_system_is_recognised_and_nothing_is_staged(
    lab: Lab, inventory_with: Callable[..., Path], tmp_path: Path
) -> None:
    hosts = hosts_for(lab, inventory_with, tmp_path, model_path=str(lab.model_source))
    doctor = run_doctor(hosts, lab.ssh_options())
    same = by_id(doctor, "model.same")["cluster"]
    assert same.status == "pass" and same.data.get("shared") is True, same.message
    report = stage_model(hosts, lab.ssh_options(), parse_source(str(lab.model_source), hosts))
    assert report.extra["stage"]["control_bytes"] == 0
    results = by_id(report, "model.stage")
    assert {r.status for r in results.values()} == {"ok"}
    assert results["node3"].data["shared_with"] == "node1"
    # a target on the shared file system that does not exist yet: staged ONCE, through
    # the first node, not once per node
    target = lab.shared / "models" / "xpufleet-stage-once"
    hosts = hosts_for(lab, inventory_with, tmp_path / "once", model_path=str(target))
    try:
        once = stage_model(hosts, lab.ssh_options(), parse_source(str(lab.model_source), hosts))
        assert once.exit_code() == 0, once.to_json()
        files = [p for p in lab.model_source.iterdir() if not p.name.startswith(".")]
        assert once.extra["stage"]["control_bytes"] == sum(p.stat().st_size for p in files)
        assert once.extra["stage"]["rounds"][0]["tree"] == {"node1": []}
        results = by_id(once, "model.stage")
        assert results["node1"].status == "changed"
        for name in ("node2", "node3", "node4"):
            assert results[name].status == "ok" and results[name].data["shared_with"] == "node1"
            assert "staged once through node1" in results[name].message
    finally:
        os.system(f"rm -rf {target}")


def test_two_streams_bring_every_file_to_every_node_each_byte_sent_once(
    lab: Lab, inventory_with: Callable[..., Path], tmp_path: Path
) -> None:
    """stage_streams: 2 in the inventory: two relays at once, each carrying a share of
    the files (by size); every node ends with every file, hash for hash, and the control
    node sends each byte once; a rerun sends nothing."""
    big = write_model(tmp_path / "big", shards=4, shard_bytes=3 << 20)
    hosts = hosts_for(lab, inventory_with, tmp_path / "inv", model_path=BIG, stage_streams=2)
    files = {p.name: p for p in big.iterdir() if p.is_file() and not p.name.startswith(".")}
    total = sum(p.stat().st_size for p in files.values())
    streams = streams_for(hosts, None)
    assert streams == 2
    try:
        report = stage_model(hosts, lab.ssh_options(), parse_source(str(big), hosts), streams=2)
        assert report.exit_code() == 0, report.to_json()
        info = report.extra["stage"]
        assert info["streams"] == 2 and info["control_bytes"] == total  # each byte once
        chains = info["rounds"][0]["chains"]
        assert len(chains) == 2 and sum(c["control_bytes"] for c in chains) == total
        first, second = (set(c["files"]) for c in chains)
        assert first.isdisjoint(second) and first | second == set(files)
        for chain in chains:
            assert chain["tree"] == {"node1": ["node2"], "node2": ["node3"], "node3": ["node4"],
                                     "node4": []}  # fmt: skip
        results = by_id(report, "model.stage")
        for i in range(1, 5):
            item = results[f"node{i}"]
            assert item.status == "changed" and sorted(item.data["received"]) == sorted(files)
            staged = lab.node_dir(i) / f"fs{BIG}"
            for name, path in files.items():
                assert file_hash(staged / name) == file_hash(path), (i, name)
            assert list(staged.glob(".*part")) == []
        rerun = stage_model(hosts, lab.ssh_options(), parse_source(str(big), hosts), streams=2)
        assert rerun.extra["stage"]["control_bytes"] == 0 and rerun.extra["stage"]["rounds"] == []
        assert {r.status for r in by_id(rerun, "model.stage").values()} == {"ok"}
    finally:
        cleanup(lab, BIG)
