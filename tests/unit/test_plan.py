"""The launch planner: ranks, devices, environment and the exact SGLang command line."""

from __future__ import annotations

import pytest

from xpufleet.errors import EXIT_BAD_INPUT, PlanError
from xpufleet.host import Host
from xpufleet.launch.plan import model_fit, plan_launch


def cluster(n: int, **vars: object) -> list[Host]:
    base = {"nic": "ens1", "model_size_gb": 100, **vars}
    return [Host(f"node{i}", f"10.0.0.{i}", vars=dict(base)) for i in range(1, n + 1)]


def arg(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_tp8_over_two_nodes_splits_ranks_and_devices() -> None:
    plan = plan_launch(cluster(4), 8, 2)
    assert [n.host for n in plan.nodes] == ["node1", "node2"]
    assert plan.ranks_per_node == 4
    second = plan.nodes[1]
    assert [r.rank for r in second.ranks] == [4, 5, 6, 7]
    assert [r.local_rank for r in second.ranks] == [0, 1, 2, 3]
    # oneCCL reads CCL_LOCAL_* (global.cpp set_local_coord), set per preflight rank
    assert [r.env["CCL_LOCAL_RANK"] for r in second.ranks] == ["0", "1", "2", "3"]
    assert {r.env["CCL_LOCAL_SIZE"] for r in second.ranks} == {"4"}
    # rank r drives local device r % per (the fork's engine.py gpu_id), one each
    assert [r.device for r in second.ranks] == [0, 1, 2, 3]
    assert second.device_mask == "0,1,2,3"
    assert second.env["ZE_AFFINITY_MASK"] == "0,1,2,3"
    # nobody reads LOCAL_* on xccl: the plan does not set them
    assert not {"LOCAL_RANK", "LOCAL_WORLD_SIZE"} & set(second.env)


def test_command_line_follows_sglang_multinode_rules() -> None:
    plan = plan_launch(cluster(2, rendezvous_port=29555, sglang_port=31000), 16)
    assert plan.nnodes == 2
    for node in plan.nodes:
        argv = node.argv
        assert argv[:3] == ("/opt/xpufleet/venv/bin/python", "-m", "sglang.launch_server")
        assert arg(argv, "--tp-size") == "16"  # the TOTAL, not per node
        assert arg(argv, "--nnodes") == "2"
        assert arg(argv, "--node-rank") == str(node.node_rank)
        assert arg(argv, "--dist-init-addr") == "10.0.0.1:29555"  # node 0's, everywhere
        assert arg(argv, "--device") == "xpu"  # explicit: SGLang defaults to cuda
        assert arg(argv, "--port") == "31000"
        assert arg(argv, "--model-path") == "/models/DeepSeek-R1"
        assert "--trust-remote-code" in argv
    assert plan.base_url == "http://10.0.0.1:31000/v1"


def test_nic_and_oneccl_settings_from_inventory() -> None:
    hosts = cluster(2, fi_provider="cxi", ccl_allreduce="ring", ccl_env={"CCL_LOG_LEVEL": "info"})
    env = plan_launch(hosts, 16).nodes[0].env
    assert env["GLOO_SOCKET_IFNAME"] == env["CCL_KVS_IFACE"] == "ens1"
    assert "FI_TCP_IFACE" not in env  # read by libfabric's tcp provider only
    assert plan_launch(cluster(2), 16).nodes[0].env["FI_TCP_IFACE"] == "ens1"
    assert env["FI_PROVIDER"] == "cxi"
    assert env["CCL_ATL_TRANSPORT"] == "ofi"
    assert env["CCL_ALLREDUCE"] == "ring"
    assert env["CCL_LOG_LEVEL"] == "info"
    assert env["ZE_FLAT_DEVICE_HIERARCHY"] == "FLAT"


def test_rendezvous_address_overrides_the_ssh_address_and_ipv6_is_bracketed() -> None:
    hosts = cluster(2, rendezvous_address="fd00::1")
    plan = plan_launch(hosts, 16)
    assert plan.dist_init_addr == "[fd00::1]:29500"


def test_default_nnodes_uses_as_few_nodes_as_the_tiles_need() -> None:
    assert plan_launch(cluster(4), 8).nnodes == 1
    assert plan_launch(cluster(4), 16).nnodes == 2
    assert plan_launch(cluster(4), 32).nnodes == 4


def test_composite_hierarchy_counts_cards() -> None:
    hosts = cluster(2, device_hierarchy="COMPOSITE")
    plan = plan_launch(hosts, 8)
    assert plan.nnodes == 2
    assert plan.nodes[0].env["ZE_FLAT_DEVICE_HIERARCHY"] == "COMPOSITE"
    assert plan.fit.device_memory_gb == 128


def test_lab_style_inventory_plans_cpu_gloo() -> None:
    hosts = cluster(4, device="cpu", dist_backend="gloo", nic="lo", model_size_gb=0.01)
    plan = plan_launch(hosts, 8, 4)
    assert plan.backend == "gloo"
    assert {arg(n.argv, "--device") for n in plan.nodes} == {"cpu"}
    assert [n.rank_span for n in plan.nodes] == ["0-1", "2-3", "4-5", "6-7"]


@pytest.mark.parametrize(
    ("tp", "nnodes", "hosts", "reason"),
    [
        (8, 3, 4, "not divisible"),
        (16, 1, 4, "more ranks per node than devices"),
        (8, 5, 4, "not enough nodes"),
        (64, None, 4, "not enough nodes"),
        (0, None, 4, "at least 1"),
    ],
)
def test_impossible_plans_are_refused_with_the_reason(
    tp: int, nnodes: int | None, hosts: int, reason: str
) -> None:
    with pytest.raises(PlanError) as info:
        plan_launch(cluster(hosts), tp, nnodes)
    assert reason in str(info.value)
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_model_that_does_not_fit_is_refused() -> None:
    # REFERENCE §5: DeepSeek-R1 FP8 (~690 GB) does not fit on 8 Max 1550 tiles
    with pytest.raises(PlanError) as info:
        plan_launch(cluster(2, model_size_gb=690), 8)
    assert "does not fit" in str(info.value)
    assert "at least 12 devices" in str(info.value)
    assert plan_launch(cluster(2, model_size_gb=690), 16).fit.fits


def test_model_fit_arithmetic() -> None:
    fit = model_fit(690, 8, 64)
    assert not fit.fits
    assert fit.capacity_gb == pytest.approx(8 * 64 * 0.9)
    assert fit.min_devices == 12
    assert model_fit(690, 16, 64).fits
    assert model_fit(100, 2, 64, usable_fraction=0.5).min_devices == 4


def test_nodes_must_agree_on_device() -> None:
    hosts = cluster(2)
    hosts[1] = Host("node2", "10.0.0.2", vars={**hosts[1].vars, "device": "cpu"})
    with pytest.raises(PlanError, match="must agree on 'device'"):
        plan_launch(hosts, 16)


def test_xccl_on_cpu_is_refused() -> None:
    with pytest.raises(PlanError, match="xccl needs device xpu"):
        plan_launch(cluster(1, device="cpu"), 8)


def test_warnings_for_hostname_rendezvous_and_missing_nic() -> None:
    hosts = [Host(f"n{i}", f"n{i}.example", vars={"model_size_gb": 1}) for i in (1, 2)]
    warnings = " ".join(plan_launch(hosts, 16).warnings)
    assert "is a name" in warnings
    assert "nic is not set on n1, n2" in warnings


def test_plan_json_round_trips_every_node() -> None:
    doc = plan_launch(cluster(2), 16).to_json()
    assert doc["base_url"] == "http://10.0.0.1:30000/v1"
    assert [n["node_rank"] for n in doc["nodes"]] == [0, 1]
    assert doc["nodes"][1]["ranks"][0]["rank"] == 8
    assert doc["fit"]["fits"] is True


def test_device_ids_and_base_gpu_id_choose_the_physical_devices() -> None:
    hosts = cluster(2, device_ids=[6, 7, 2, 3], sglang_extra_args=["--base-gpu-id", "1"])
    node = plan_launch(hosts, 4, 2).nodes[1]
    assert node.env["ZE_AFFINITY_MASK"] == "6,7,2"
    assert [(r.rank, r.device, r.physical_device) for r in node.ranks] == [(2, 1, 7), (3, 2, 2)]
    composite = plan_launch(cluster(1, device_hierarchy="COMPOSITE"), 4).nodes[0]
    assert [r.physical_device for r in composite.ranks] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("variables", "tp", "nnodes", "message"),
    [
        ({}, 16, 1, "oversubscribed: more ranks per node than devices"),
        ({"device_hierarchy": "COMPOSITE"}, 8, 1, "oversubscribed"),
        ({"device_ids": [0, 1]}, 8, 2, "oversubscribed: 4 rank(s) per node"),
        ({"device_ids": [0, 0, 1, 2]}, 8, 2, "name a device twice"),
        ({"device_ids": [0, 9]}, 4, 2, "device_ids [9] do not exist"),
        ({"sglang_extra_args": ["--base-gpu-id=6"]}, 8, 2, "oversubscribed"),
        ({"ccl_env": {"ZE_AFFINITY_MASK": "0"}}, 8, 2, "ccl_env may not set ZE_AFFINITY_MASK"),
    ],
)
def test_two_ranks_on_one_device_is_refused(
    variables: dict, tp: int, nnodes: int, message: str
) -> None:
    with pytest.raises(PlanError) as caught:
        plan_launch(cluster(2, **variables), tp, nnodes)
    assert message in str(caught.value)
    assert caught.value.exit_code == EXIT_BAD_INPUT


def test_every_planned_variable_has_a_reason() -> None:
    from xpufleet.launch.plan import ENV_REASONS, explain_env

    plan = plan_launch(cluster(2, ccl_allreduce="ring", ccl_env={"CCL_LOG_LEVEL": "info"}), 16)
    rows = explain_env(plan)
    names = {name for _, name, _, _ in rows}
    assert names - {"CCL_LOG_LEVEL"} <= set(ENV_REASONS)
    assert {"CCL_LOCAL_RANK", "CCL_LOCAL_SIZE", "ZE_AFFINITY_MASK"} <= names
    assert all(reason and "\n" not in reason for _, _, _, reason in rows)
    assert [r for _, n, _, r in rows if n == "CCL_LOG_LEVEL"] == [
        "inventory ccl_env or engine_env: set by the operator"
    ] * 2


def test_slurm_hosts_take_node_ranks_in_slurms_node_order() -> None:
    """srun numbers a step's nodes (SLURM_NODEID) by the controller's node table, not by
    -w or the inventory: the plan follows it (rank 0's address is the rendezvous), only
    for slurm hosts, and names a node Slurm does not know."""
    hosts = cluster(4, connector="slurm")
    table = ["node4", "node2", "node3", "node1"]
    asked: list[list[str]] = []

    def order(chosen: object) -> list[str]:
        asked.append([h.name for h in chosen])  # type: ignore[attr-defined]
        return table

    plan = plan_launch(hosts, 8, 2, node_order=order)
    assert asked == [["node1", "node2"]]  # the inventory picks the nodes, Slurm orders them
    assert [(n.host, n.node_rank) for n in plan.nodes] == [("node2", 0), ("node1", 1)]
    assert [r.rank for r in plan.nodes[1].ranks] == [4, 5, 6, 7]
    assert plan.dist_init_addr.startswith("10.0.0.2:")
    assert arg(plan.nodes[1].argv, "--node-rank") == "1"
    ssh = plan_launch(cluster(2), 8, 2, node_order=order)  # ssh hosts: inventory order
    assert [n.host for n in ssh.nodes] == ["node1", "node2"] and len(asked) == 1
    with pytest.raises(PlanError, match="Slurm does not know node"):
        plan_launch(hosts, 8, 2, node_order=lambda chosen: ["node2", "node7"])


def test_a_plan_over_two_connectors_is_refused_naming_where_it_was_set() -> None:
    hosts = cluster(2)
    hosts[1] = Host(
        "node2", "10.0.0.2", vars={**hosts[1].vars, "connector": "slurm"},
        var_sources={"connector": ("inventory.yaml", 14)},
    )  # fmt: skip
    with pytest.raises(PlanError) as caught:
        plan_launch(hosts, 8, 2, node_order=lambda chosen: pytest.fail("Slurm asked"))
    error = caught.value
    assert (error.file, error.line, error.key, error.exit_code) == (
        "inventory.yaml", 14, "connector", EXIT_BAD_INPUT,
    )  # fmt: skip
    assert "node1 uses ssh (the default)" in error.message
    assert plan_launch(hosts, 4, 1).nodes[0].host == "node1"  # one connector: fine
