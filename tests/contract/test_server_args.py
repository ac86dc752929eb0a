"""Contract with the REAL SGLang: every argv the planner builds parses with sglang
0.4.3.post2's own `ServerArgs.add_cli_args` / `from_cli_args` (PyPI, the release the
fork is based on) and means what the plan says: tp size, nnodes, node rank, dist-init
address, device. The real package lives in its own environment, created once per machine
(`xpufleet.lab.upstream_sglang`, ~1.9 GB on first use)."""

from __future__ import annotations

import pytest

from xpufleet.host import Host
from xpufleet.lab.upstream_sglang import ensure_upstream_sglang, parse_with_real_server_args
from xpufleet.launch.plan import plan_launch


@pytest.fixture(scope="module")
def real_python() -> object:
    return ensure_upstream_sglang()


def cluster(n: int, **vars: object) -> list[Host]:
    base = {"nic": "hsn0", "model_size_gb": 100, **vars}
    return [Host(f"node{i}", f"10.0.0.{i}", vars=dict(base)) for i in range(1, n + 1)]


PLANS = {
    "tp16 over 2 Max nodes, split network": (
        cluster(2, rendezvous_address="10.10.0.1", mem_fraction_static=0.85),
        16,
        None,
    ),
    "tp4 over 2 nodes with base gpu id": (
        cluster(2, device_ids=[4, 5, 6, 7], sglang_extra_args=["--base-gpu-id", "2"]),
        4,
        2,
    ),
    "lab-style cpu plan over 4 nodes": (
        cluster(4, device="cpu", dist_backend="gloo", model_size_gb=0.01),
        8,
        4,
    ),
    "ipv6 rendezvous": (cluster(2, rendezvous_address="fd00::1"), 16, 2),
}


def test_planned_argv_parses_with_the_real_server_args(real_python: object) -> None:
    plans = [plan_launch(hosts, tp, nnodes) for hosts, tp, nnodes in PLANS.values()]
    argvs = []
    for plan in plans:
        for node in plan.nodes:
            assert node.argv[1:3] == ("-m", "sglang.launch_server")
            argvs.append(list(node.argv[3:]))
    parsed_all = iter(parse_with_real_server_args(real_python, argvs))
    for plan in plans:
        for node in plan.nodes:
            parsed = next(parsed_all)
            assert parsed["tp_size"] == plan.tp
            assert parsed["nnodes"] == plan.nnodes
            assert parsed["node_rank"] == node.node_rank
            assert parsed["dist_init_addr"] == plan.dist_init_addr
            assert parsed["device"] == plan.device
            assert parsed["model_path"] == plan.model_path
            assert parsed["port"] == node.http_port
            assert parsed["trust_remote_code"] is True
            # local rank l drives base_gpu_id + l (the fork's engine.py gpu_id)
            assert [parsed["base_gpu_id"] + r.local_rank for r in node.ranks] == [
                r.device for r in node.ranks
            ]


def test_the_real_parser_refuses_what_sglang_0_4_3_lacks(real_python: object) -> None:
    """The contract can fail: `--dist-timeout` came with SGLang 0.4.6 (REFERENCE §2)."""
    argv = list(plan_launch(cluster(1), 8).nodes[0].argv[3:]) + ["--dist-timeout", "60"]
    with pytest.raises(RuntimeError, match="dist-timeout"):
        parse_with_real_server_args(real_python, [argv])
