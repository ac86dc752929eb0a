"""model.files / model.same on DeepSeek-R1-shaped listings: faults named, shared fs seen."""

from __future__ import annotations

import copy
import json
import struct
from pathlib import Path
from typing import Any

from doctor_samples import R1_SHARD_BYTES, facts, healthy_raw, model_raw, r1_shard

from xpufleet.checks.cluster import check_plan
from xpufleet.checks.weights import check_model_files, check_model_same, model_bytes
from xpufleet.facts.node import NodeFacts
from xpufleet.lab.model import break_model, safetensors_bytes, write_model


def node(name: str, model: dict[str, Any]) -> NodeFacts:
    raw = healthy_raw()
    raw["model"] = model
    return facts(raw, name)


def local(model: dict[str, Any], ino: int) -> dict[str, Any]:
    """The same model on a node's own disk (its own directory inode)."""
    model = copy.deepcopy(model)
    model["mount"] = {"point": "/", "root": "/", "fstype": "ext4", "source": "/dev/sda1"}
    model["dir"] = {"dev": 2049, "ino": ino}
    return model


def test_complete_manifest_directory_passes_and_missing_short_changed_are_named() -> None:
    assert check_model_files(node("n1", model_raw())).status == "pass"
    raw = model_raw()
    del raw["files"][r1_shard(42)]
    raw["files"][r1_shard(7)][0] = 1 << 20
    raw["files"][r1_shard(9)][1] += 1
    item = check_model_files(node("n1", raw))
    assert item.status == "fail"
    assert f"missing {r1_shard(42)}" in item.message
    assert f"{r1_shard(7)} short: 1048576 of {R1_SHARD_BYTES} bytes" in item.message
    assert r1_shard(9) in item.data["changed"]


def test_without_manifest_sizes_come_from_headers_and_index() -> None:
    raw = model_raw(manifest=False)
    assert check_model_files(node("n1", raw)).status == "pass"
    raw["headers"][r1_shard(3)] = {"expected": R1_SHARD_BYTES + 10}
    del raw["files"]["tokenizer_config.json"]
    item = check_model_files(node("n1", raw))
    assert item.status == "fail" and "shard headers" in item.message
    assert "tokenizer_config.json" in item.data["missing"]
    assert r1_shard(3) in item.data["wrong_size"]


def test_absent_directory_fails() -> None:
    item = check_model_files(node("n1", {"path": "/models/DeepSeek-R1", "exists": False}))
    assert item.status == "fail" and "does not exist" in item.message


def test_model_same_names_the_odd_node_and_its_shards() -> None:
    good = model_raw()
    odd = copy.deepcopy(good)
    del odd["files"][r1_shard(5)]
    nodes = {f"node{i}": node(f"node{i}", local(good, i)) for i in (1, 2, 4)}
    nodes["node3"] = node("node3", local(odd, 3))
    item = check_model_same(nodes)
    assert item.status == "fail" and item.data["odd"] == ["node3"]
    assert f"missing {r1_shard(5)}" in item.message
    other = copy.deepcopy(good)
    doc = json.loads(other["manifest_text"])
    doc["files"][r1_shard(5)]["hash"] = "f" * 64
    other["manifest_text"] = json.dumps(doc)
    nodes["node3"] = node("node3", local(other, 3))
    item = check_model_same(nodes)
    assert item.status == "fail" and "hash ffffffffffff" in item.message
    # staged by an older xpufleet (blake2b-256): its hashes compare with nothing, sizes do
    doc["hash"] = "blake2b-256"
    other["manifest_text"] = json.dumps(doc)
    nodes["node3"] = node("node3", local(other, 3))
    assert check_model_same(nodes).status == "pass"


def test_one_shared_file_system_is_recognised_and_local_copies_are_not() -> None:
    shared = {f"node{i}": node(f"node{i}", model_raw()) for i in (1, 2, 3)}
    item = check_model_same(shared)
    assert item.status == "pass" and item.data["shared"] is True and "nfs4" in item.message
    other_export = dict(shared, node3=node("node3", model_raw(source="nfs1:/export/models")))
    assert not check_model_same(other_export).data.get("shared")
    copies = {f"node{i}": node(f"node{i}", local(model_raw(), i)) for i in (1, 2, 3)}
    item = check_model_same(copies)
    assert item.status == "pass" and not item.data.get("shared")
    same_local = {f"node{i}": node(f"node{i}", local(model_raw(), 7)) for i in (1, 2)}
    assert check_model_same(same_local).data["shared"] is True


def test_fit_uses_the_size_on_disk() -> None:
    from doctor_samples import host

    nodes = {"node1": node("node1", model_raw())}
    size = model_bytes(nodes, "node1")
    assert size is not None and size > 163 * R1_SHARD_BYTES
    item = check_plan([host("node1", model_size_gb=1)], tp=1, on_disk=size)
    assert item.status == "fail" and item.data["model_size_from"] == "disk"


def test_the_real_probe_reads_shard_headers_and_catches_the_lab_faults(tmp_path: Path) -> None:
    from test_facts_probe import run_probe_locally

    from xpufleet.facts.node import parse_facts
    from xpufleet.facts.probe import build_script, probe_params
    from xpufleet.host import Host

    model = write_model(tmp_path / "m", shards=3, shard_bytes=4096)

    def probe() -> NodeFacts:
        host = Host("n1", "127.0.0.1", vars={"model_path": str(model)})
        raw = run_probe_locally(build_script(probe_params(host)))
        return parse_facts("n1", raw)

    found = probe()
    assert check_model_files(found).status == "pass"
    assert found.model is not None and found.model.mount is not None
    break_model(model, "model_short_shard")
    item = check_model_files(probe())
    assert item.status == "fail" and "model-00002-of-00003.safetensors short" in item.message
    break_model(model, "model_missing_shard")
    assert "missing model-00002-of-00003.safetensors" in check_model_files(probe()).message


def test_safetensors_writer_round_trips_through_the_header_rule(tmp_path: Path) -> None:
    data = safetensors_bytes({"a": b"\0" * 12, "b": b"\1" * 8})
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    assert len(data) == 8 + length + max(
        t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"
    )
    model = write_model(tmp_path / "m", shards=3, shard_bytes=4096)
    shard = sorted(model.glob("*.safetensors"))[1]
    size = shard.stat().st_size
    break_model(model, "model_other_shard")
    assert shard.stat().st_size == size
    break_model(model, "model_short_shard")
    assert shard.stat().st_size == size // 2
