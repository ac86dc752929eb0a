"""The vLLM-on-Ray plan (the guide's second path): which node runs what. Pure: no SSH.

What it encodes, read from the vLLM fork the guide uses (zhuyuhua-v/vllm@yuhua/deepseek)
and from Ray 2.60:
- the fork forces the Ray executor on XPU (`vllm/platforms/xpu.py::check_and_update_config`
  turns `mp` and anything else into `ray`), so serving across nodes is a Ray cluster over
  the nodes and ONE OpenAI server on the head, started with
  `--distributed-executor-backend ray` (said explicitly, so the lab's CPU vLLM does the
  same);
- it asks Ray for one "GPU" per worker (`ray_device_key = "GPU"`): every node's
  `ray start` declares `--num-gpus` = the node's planned workers, so exactly that many land
  there (Ray finds Intel GPUs only through dpctl, which the closed environment lacks);
- Ray narrows each worker to its device by rewriting ZE_AFFINITY_MASK from the one the
  raylet started with (`ray/_private/accelerators/intel_gpu.py`): the node-wide mask given
  to `ray start` is the device pool;
- the worker initialises torch.distributed with backend `ccl` after setting
  CCL_ATL_TRANSPORT (default ofi) and LOCAL_WORLD_SIZE, which it defaults to the WORLD
  size (`vllm/worker/xpu_worker.py::init_worker_distributed_environment`): wrong as soon as
  the plan spans nodes, so the plan sets it per node, like the rest of oneCCL's
  environment (`plan.node_env`, as for SGLang);
- vLLM takes its own address from VLLM_HOST_IP (else a route lookup, which picks the wrong
  NIC on multi-homed nodes) and the cluster from RAY_ADDRESS.
- every `ray start` runs with `--block`, so the node's Ray lives as long as a process a
  supervisor can watch (it exits when one of Ray's processes dies unexpectedly). Stopping
  takes `ray stop` AND ending that process: `ray stop` SIGTERMs Ray's processes, which
  `--block` counts as graceful and goes on blocking, and its own SIGTERM handler first
  drains the node through the GCS (ray/scripts/scripts.py::start, ray/_private/node.py;
  seen in the lab: still alive minutes after a SIGTERM once the GCS was gone).
The server runs as `python -m vllm.entrypoints.openai.api_server` (works for the fork and
for CPU builds whose distribution name breaks the `vllm` console script).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from ..errors import PlanError
from ..host import Host
from ..variables import var, venv_python
from .plan import (
    assign_devices,
    default_nnodes,
    devices_per_node,
    node_env,
    rendezvous_address,
    url_host,
)

#: Ray's default GCS port
DEFAULT_RAY_PORT = 6379
HEALTH_PATH = "/health"


@dataclass(frozen=True)
class RayNode:
    """One node of the Ray cluster: its `ray start` and the environment it runs with."""

    host: str
    address: str
    role: str  # "head" | "worker"
    workers: int
    env: dict[str, str]
    argv: tuple[str, ...]


@dataclass(frozen=True)
class VllmPlan:
    """A Ray cluster over `nnodes` nodes and the OpenAI server on its head."""

    tp: int
    pp: int
    nnodes: int
    ray_address: str
    model_path: str
    model_name: str
    http_host: str
    http_port: int
    nodes: tuple[RayNode, ...]
    server_env: dict[str, str]
    server_argv: tuple[str, ...]
    health_path: str = HEALTH_PATH

    @property
    def head(self) -> RayNode:
        return self.nodes[0]

    @property
    def base_url(self) -> str:
        address = self.head.address if self.http_host in ("0.0.0.0", "::", "") else self.http_host
        return f"http://{url_host(address)}:{self.http_port}/v1"

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["engine"] = "vllm"
        doc["base_url"] = self.base_url
        doc["server_argv"] = list(self.server_argv)
        doc["nodes"] = [{**asdict(n), "argv": list(n.argv)} for n in self.nodes]
        return doc


def plan_vllm(
    hosts: Sequence[Host],
    tp: int,
    nnodes: int | None = None,
    *,
    pp: int = 1,
    model_path: str | None = None,
    model_name: str | None = None,
) -> VllmPlan:
    """Plan tp x pp vLLM workers over the first `nnodes` of `hosts` (node 0 is the head)."""
    if tp < 1 or pp < 1:
        raise PlanError(f"--tp and --pp must be at least 1, got {tp} and {pp}", key="--tp")
    if not hosts:
        raise PlanError("no hosts selected (check --hosts and --limit)", key="--limit")
    world = tp * pp
    nnodes = default_nnodes(world, hosts) if nnodes is None else nnodes
    if nnodes < 1 or nnodes > len(hosts):
        raise PlanError(
            f"--nnodes {nnodes} is not between 1 and the {len(hosts)} selected host(s)",
            key="--nnodes",
        )
    if world % nnodes:
        raise PlanError(
            f"{world} workers (tp {tp} x pp {pp}) do not divide over {nnodes} nodes",
            key="--nnodes",
        )
    per_node = world // nnodes
    chosen = list(hosts[:nnodes])
    for host in chosen:
        if devices_per_node(host) < per_node:
            raise PlanError(
                f"{host.name} exposes {devices_per_node(host)} device(s) but the plan puts "
                f"{per_node} vLLM worker(s) on each node; use more nodes (--nnodes)",
                key="--tp",
            )
    head_host = chosen[0]
    head_address = rendezvous_address(head_host)
    ray_port = int(var(head_host, "ray_port"))
    ray_address = f"{url_host(head_address)}:{ray_port}"
    nodes = []
    for index, host in enumerate(chosen):
        address = head_address if index == 0 else rendezvous_address(host)
        mask, _physical = assign_devices(host, per_node)
        env = {
            **node_env(host, mask),
            # the fork's xpu_worker.py defaults it to the WORLD size before init (see above)
            "LOCAL_WORLD_SIZE": str(per_node),
            "VLLM_HOST_IP": address,
        }
        ray = str(PurePosixPath(venv_python(var(host, "venv"))).parent / "ray")
        if index == 0:
            argv = (ray, "start", "--head", "--port", str(ray_port))
        else:
            argv = (ray, "start", "--address", ray_address)
        argv += ("--node-ip-address", address, "--num-gpus", str(per_node),
                 "--disable-usage-stats", "--block")  # fmt: skip
        nodes.append(RayNode(host.name, address, "head" if index == 0 else "worker",
                             per_node, env, argv))  # fmt: skip
    model_path = model_path or str(var(head_host, "model_path"))
    model_name = model_name or str(var(head_host, "model_name"))
    http_host = str(var(head_host, "sglang_host"))
    http_port = int(var(head_host, "sglang_port"))
    server_argv: tuple[str, ...] = (
        venv_python(var(head_host, "venv")), "-m", "vllm.entrypoints.openai.api_server",
        "--model", model_path, "--served-model-name", model_name,
        "--host", http_host, "--port", str(http_port),
        "--tensor-parallel-size", str(tp),
    )  # fmt: skip
    if pp > 1:
        server_argv += ("--pipeline-parallel-size", str(pp))
    server_argv += ("--distributed-executor-backend", "ray", "--trust-remote-code")
    server_argv += tuple(str(a) for a in var(head_host, "vllm_extra_args") or ())
    server_env = {**nodes[0].env, "RAY_ADDRESS": ray_address}
    return VllmPlan(
        tp, pp, nnodes, ray_address, model_path, model_name, http_host, http_port,
        tuple(nodes), server_env, server_argv,
    )  # fmt: skip
