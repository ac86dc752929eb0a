"""Cluster checks: odd ones out by name, rendezvous reachability, and the plan's arithmetic."""

from __future__ import annotations

import json

from doctor_samples import connect, facts, healthy_raw, host, patched

from xpufleet.checks.cluster import (
    check_plan,
    check_rendezvous,
    check_versions,
    check_wheels,
    run_cluster_checks,
)
from xpufleet.facts.node import NodeFacts


def cluster(**odd: dict) -> dict[str, NodeFacts]:
    """Four healthy nodes; `odd` maps a node name to the raw document it has instead."""
    return {
        f"node{i}": facts(odd.get(f"node{i}") or healthy_raw(), name=f"node{i}")
        for i in range(1, 5)
    }


def test_same_versions_everywhere() -> None:
    result = check_versions(cluster())
    assert result.status == "pass"
    assert "node[1-4]" in result.message


def test_an_old_oneapi_node_is_named_as_the_odd_one_out() -> None:
    old = patched(**{"oneapi.unified": {"2024.0": True}})
    old["oneapi"]["components"]["ccl"]["latest"] = "2021.11"
    result = check_versions(cluster(node3=old))
    assert result.status == "fail"
    assert result.data["odd"] == ["node3"]
    assert "oneapi: node3 2024.0 vs node[1-2,4] 2025.0" in result.message
    assert "oneccl: node3 2021.11 vs node[1-2,4] 2021.14" in result.message
    assert result.runbook == "docs/runbooks/doctor.md#clusterversions"


def test_a_different_sglang_fails_and_an_xpu_smi_difference_only_warns() -> None:
    other = healthy_raw()
    other["env"]["result"]["packages"]["sglang"] = "0.4.6"
    assert check_versions(cluster(node2=other)).status == "fail"
    smi = healthy_raw()
    smi["gpu_tools"]["xpu_smi_version"]["out"] = smi["gpu_tools"]["xpu_smi_version"]["out"].replace(
        "1.2.39.20240906", "1.2.40.20241010"
    )
    result = check_versions(cluster(node4=smi))
    assert result.status == "warn" and result.data["odd"] == ["node4"]


def test_one_node_has_nothing_to_compare() -> None:
    assert check_versions({"node1": facts()}).status == "skip"


def test_wheel_hashes() -> None:
    assert check_wheels(cluster()).status == "pass"
    other = healthy_raw()
    manifest = json.loads(other["wheels_text"])
    manifest["wheels"]["torch"]["sha256"] = "c" * 64
    other["wheels_text"] = json.dumps(manifest)
    result = check_wheels(cluster(node2=other))
    assert result.status == "fail" and result.data["odd"] == ["node2"]
    assert "torch: node2 cccccccccccc vs node[1,3-4] aaaaaaaaaaaa" in result.message
    missing = patched(wheels_text=None)
    result = check_wheels(cluster(node4=missing))
    assert result.status == "fail" and "no wheels.json on node4" in result.message
    nowhere = {n: facts(patched(wheels_text=None), name=n) for n in ("node1", "node2")}
    assert check_wheels(nowhere).status == "skip"


HOSTS = [host(f"node{i}", f"10.0.0.{i}") for i in range(1, 5)]


def with_connects(results: dict[str, str]) -> dict:
    """A raw document whose connects to the named peers end as given (others: refused)."""
    raw = healthy_raw()
    raw["rendezvous"] = [
        connect(f"node{i}", f"10.0.0.{i}", results.get(f"node{i}", "refused")) for i in range(1, 5)
    ]
    return raw


def test_rendezvous_everyone_reaches_everyone() -> None:
    per_node, summary = check_rendezvous(cluster(), HOSTS)
    assert summary.status == "pass"
    assert {r.status for r in per_node.values()} == {"pass"}
    assert per_node["node3"].message.startswith("reaches node 0 node1 10.0.0.1:29500 (refused)")


def test_a_dropped_port_is_reported_on_its_own_node_only() -> None:
    """node3's firewall drops its port: every node times out on it, itself included."""
    raw = with_connects({"node3": "timeout"})
    per_node, summary = check_rendezvous(
        {f"node{i}": facts(raw, name=f"node{i}") for i in range(1, 5)}, HOSTS
    )
    assert {n: r.status for n, r in per_node.items() if r.status != "pass"} == {"node3": "fail"}
    assert "its rendezvous port 10.0.0.3:29500 is dropped: timeout from node[1-2,4]" in (
        per_node["node3"].message
    )
    assert summary.status == "fail" and summary.data["odd"] == ["node3"]
    assert "port dropped on node3" in summary.message


def test_a_node_that_cannot_get_out_is_the_one_named() -> None:
    nodes = cluster(
        node2=with_connects({"node1": "timeout", "node3": "timeout", "node4": "timeout"})
    )
    per_node, summary = check_rendezvous(nodes, HOSTS)
    assert {n: r.status for n, r in per_node.items() if r.status != "pass"} == {"node2": "fail"}
    assert per_node["node2"].message.startswith("cannot reach node1 10.0.0.1:29500, node3")
    assert summary.data["odd"] == ["node2"]
    assert "node2 cannot reach node 0 node1 10.0.0.1:29500" in summary.message


def test_node_0_dropped_fails_node_0() -> None:
    raw = with_connects({"node1": "timeout"})
    per_node, summary = check_rendezvous(
        {f"node{i}": facts(raw, name=f"node{i}") for i in range(1, 5)}, HOSTS
    )
    assert [n for n, r in per_node.items() if r.status == "fail"] == ["node1"]
    assert "node[1-4] cannot reach node 0 node1" in summary.message


def test_two_nodes_one_failing_peer_is_blamed_only_when_the_target_fails_itself() -> None:
    pair = HOSTS[:2]
    out_blocked = {
        "node1": facts(with_connects({"node2": "timeout"}), name="node1"),
        "node2": facts(healthy_raw(), name="node2"),
    }
    per_node, _ = check_rendezvous(out_blocked, pair)
    assert [n for n, r in per_node.items() if r.status == "fail"] == ["node1"]
    dropped = {n: facts(with_connects({"node2": "timeout"}), name=n) for n in ("node1", "node2")}
    per_node, _ = check_rendezvous(dropped, pair)
    assert [n for n, r in per_node.items() if r.status == "fail"] == ["node2"]


def test_nodes_without_the_test_are_skipped() -> None:
    nodes = cluster(node4=patched(rendezvous=None))
    per_node, summary = check_rendezvous(nodes, HOSTS)
    assert per_node["node4"].status == "skip"
    assert summary.status == "pass" and "(node4 not tested)" in summary.message


def test_deepseek_fp8_on_eight_tiles_is_refused_with_the_arithmetic_and_a_plan() -> None:
    one_node = [host("node1", cards=4, tiles=8)]
    result = check_plan(one_node)
    assert result.status == "fail"
    assert "(8 x 64 GB = 512 GB)" in result.message
    assert "model (690 GB) does not fit in 8 device(s) x 64 GB x 0.90 usable" in result.message
    assert "use --tp 16 --nnodes 2" in result.message
    assert "needs 2 nodes of 8 devices, the selection has 1" in result.message
    assert (result.data["suggested_tp"], result.data["suggested_nnodes"]) == (16, 2)


def test_the_suggested_plan_fits() -> None:
    two_nodes = [host(f"node{i}", f"10.0.0.{i}", cards=4, tiles=8) for i in (1, 2)]
    assert check_plan(two_nodes).status == "pass"
    assert check_plan(two_nodes, tp=16).status == "pass"
    tp8 = check_plan(two_nodes, tp=8)
    assert tp8.status == "fail" and "--tp 8 --nnodes 1" in tp8.message
    too_big = check_plan(two_nodes, tp=32)
    assert too_big.status == "fail" and "not enough nodes" in too_big.message


def test_small_models_fit_one_tile() -> None:
    assert check_plan([host("node1", model_size_gb=1)], tp=1).status == "pass"


def test_run_cluster_checks_leaves_unreachable_nodes_out() -> None:
    nodes = cluster()
    del nodes["node4"]
    hosts = [host(f"node{i}", f"10.0.0.{i}") for i in range(1, 5)]
    cluster_results, per_node = run_cluster_checks(nodes, hosts)
    results = {r.id: r for r in cluster_results}
    assert set(per_node) == {"node1", "node2", "node3", "node4"}
    assert per_node["node1"].status == "pass"
    assert set(results) == {
        "cluster.versions",
        "cluster.wheels",
        "cluster.rendezvous",
        "model.same",
        "cluster.plan",
    }
    assert "node[1-3]" in results["cluster.versions"].message
