"""The vLLM-on-Ray plan: Ray head and workers, resources, environment, server command."""

from __future__ import annotations

import pytest

from xpufleet.errors import PlanError
from xpufleet.host import Host
from xpufleet.launch.vllm_plan import plan_vllm


def cluster(n: int, **vars: object) -> list[Host]:
    base = {"nic": "ens1", "model_size_gb": 100, **vars}
    return [Host(f"node{i}", f"10.0.0.{i}", vars=dict(base)) for i in range(1, n + 1)]


def arg(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_ray_head_on_node0_and_one_worker_per_device_everywhere() -> None:
    plan = plan_vllm(cluster(3, ray_port=6400), 16)
    assert plan.nnodes == 2 and plan.ray_address == "10.0.0.1:6400"
    head, worker = plan.nodes
    assert head.argv[:4] == ("/opt/xpufleet/venv/bin/ray", "start", "--head", "--port")
    assert arg(head.argv, "--port") == "6400"
    assert arg(worker.argv, "--address") == "10.0.0.1:6400"
    for node, address in ((head, "10.0.0.1"), (worker, "10.0.0.2")):
        assert arg(node.argv, "--node-ip-address") == address
        assert arg(node.argv, "--num-gpus") == "8"  # exactly the planned workers land here
        assert "--block" in node.argv  # ray start lives as long as the node's Ray does
        assert node.env["VLLM_HOST_IP"] == address
        # the fork's worker defaults LOCAL_WORLD_SIZE to the WORLD size: set per node
        assert node.env["LOCAL_WORLD_SIZE"] == "8"
        assert node.env["ZE_AFFINITY_MASK"] == "0,1,2,3,4,5,6,7"  # Ray's device pool
        assert node.env["CCL_KVS_IFACE"] == "ens1"


def test_server_command_on_the_head() -> None:
    plan = plan_vllm(cluster(2, sglang_port=31000, vllm_extra_args=["--max-model-len", "8192"]), 16)
    argv = plan.server_argv
    assert argv[:3] == ("/opt/xpufleet/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server")
    assert arg(argv, "--tensor-parallel-size") == "16"
    assert "--pipeline-parallel-size" not in argv
    assert arg(argv, "--distributed-executor-backend") == "ray"
    assert arg(argv, "--model") == "/models/DeepSeek-R1"
    assert arg(argv, "--served-model-name") == "deepseek-ai/DeepSeek-R1"
    assert argv[-2:] == ("--max-model-len", "8192")
    assert plan.server_env["RAY_ADDRESS"] == "10.0.0.1:6379"
    assert plan.server_env["VLLM_HOST_IP"] == "10.0.0.1"
    assert plan.base_url == "http://10.0.0.1:31000/v1"
    assert plan.health_path == "/health"
    doc = plan.to_json()
    assert doc["engine"] == "vllm" and doc["nodes"][1]["role"] == "worker"


def test_pipeline_parallel_counts_workers_per_node() -> None:
    plan = plan_vllm(cluster(2), 8, pp=2)
    assert arg(plan.server_argv, "--pipeline-parallel-size") == "2"
    assert [n.workers for n in plan.nodes] == [8, 8]


def test_rendezvous_address_is_where_ray_listens() -> None:
    hosts = cluster(2)
    hosts[0] = Host(
        "node1", "10.0.0.1", vars={**hosts[0].vars, "rendezvous_address": "192.168.9.1"}
    )
    hosts[1] = Host(
        "node2", "10.0.0.2", vars={**hosts[1].vars, "rendezvous_address": "192.168.9.2"}
    )
    plan = plan_vllm(hosts, 16)
    assert plan.ray_address == "192.168.9.1:6379"
    assert arg(plan.nodes[1].argv, "--node-ip-address") == "192.168.9.2"


@pytest.mark.parametrize(
    ("tp", "nnodes", "pp", "key"),
    [(0, None, 1, "--tp"), (16, 3, 1, "--nnodes"), (16, 1, 1, "--tp"), (8, 5, 1, "--nnodes")],
)
def test_impossible_plans_are_refused(tp: int, nnodes: int | None, pp: int, key: str) -> None:
    with pytest.raises(PlanError) as err:
        plan_vllm(cluster(4), tp, nnodes, pp=pp)
    assert err.value.key == key
