"""SGLang, launch's first engine: every node runs `python -m sglang.launch_server` with the
same `--dist-init-addr`, inside the preflight's process (one torch import).

From the fork (cboss6/sglang@deepseek-xpu-distribute, 0.4.3.post2): `--tp-size` is the
total, `--node-rank` the node, `--device xpu` explicit (the default is cuda); every node
serves HTTP, node 0 the API (`/health_generate` proves it generates), the others only
`/health`; the schedulers are titled `sglang::scheduler` without an index
(managers/scheduler.py) and spawned in rank order after the resource tracker and before
the detokenizer (entrypoints/engine.py), each as `mp.Process(target=run_scheduler_process,
args=(server_args, port_args, gpu_id, tp_rank, None, writer))`: the preflight wrapper
records those starts, and the supervisor takes each scheduler's rank from that record;
rank lines carry `[time TP<n>]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import PlanError
from ...host import Host
from ..http import http_status
from . import NodeContext, ProcessPatterns

if TYPE_CHECKING:
    from ..judge import PreflightVerdict
    from ..plan import LaunchPlan, NodePlan

#: all_reduce message sizes of the preflight, per backend (bytes)
PREFLIGHT_SIZES = {
    "gloo": [4 << 10, 256 << 10, 4 << 20],
    "xccl": [1 << 20, 64 << 20, 256 << 20],
}

PATTERNS = ProcessPatterns(
    roles=(
        ("resource tracker", r"multiprocessing\.resource_tracker"),
        ("detokenizer", r"^sglang::detoken"),
        ("tokenizer manager", r"^sglang::tokeniz"),
        ("data parallel controller", r"^sglang::data_pa"),
        ("scheduler", r"^sglang::schedul"),
        ("preflight rank", r"^preflight_r"),
        # a spawn child that has not set its title yet (python -c "...spawn_main(...)")
        ("starting", r"multiprocessing\.spawn|multiprocessing\.forkserver"),
    ),
    rank_role="scheduler",
    watched_helpers=("detokenizer",),
    # `[2025-02-06 21:35:19 TP5] msg` (rank lines) and `[2025-02-06 21:35:19] msg` (server)
    log_prefix=r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: (?:TP|DP\d+ TP)(?P<rank>\d+))?\]",
    server_name="sglang.launch_server",
    # WITH its rank, as upstream SGLang later titles it (`sglang::scheduler_DP0_TP3`)
    rank_title=r"sglang::scheduler(?:_DP\d+)?_TP(\d+)(?:\s|$)",
    discovery="children",
    needs_log_tags=True,
    pending_roles=("starting",),
    identified_by="title sglang::scheduler, the server's spawn record, TP<n> log prefixes",
    by_device=True,
    # entrypoints/engine.py: `mp.Process(target=run_scheduler_process, args=(server_args,
    # port_args, gpu_id, tp_rank, None, writer))`, managers/scheduler.py's signature
    spawned_rank=("run_scheduler_process", "tp_rank"),
)


class SGLang:
    """`sglang.launch_server` on every node (see the module docstring)."""

    name = "sglang"
    title = "SGLang"
    log_file = "sglang.log"
    ready_note = ""
    template = "launch.sh.j2"
    patterns = PATTERNS
    uniform_vars = ("sglang_port",)
    node_scripts = ("preflight.py",)
    abort_grace_s = None

    def http(self, host: Host) -> tuple[str, int]:
        return host.var.sglang_host, host.var.sglang_port

    def serves_http(self, node_rank: int) -> bool:
        return True

    def health_path(self, node_rank: int) -> str:
        """Node 0 proves it generates; the other nodes only that their server is up."""
        return "/health_generate" if node_rank == 0 else "/health"

    def server_name(self, node_rank: int) -> str:
        return PATTERNS.server_name

    def base_gpu_id(self, host: Host) -> int:
        """SGLang's `--base-gpu-id` when the inventory passes one in sglang_extra_args."""
        args = list(host.var.sglang_extra_args)
        for index, arg in enumerate(args):
            value = None
            if arg == "--base-gpu-id" and index + 1 < len(args):
                value = args[index + 1]
            elif arg.startswith("--base-gpu-id="):
                value = arg.split("=", 1)[1]
            if value is not None:
                try:
                    return int(value)
                except ValueError:
                    raise PlanError(
                        f"--base-gpu-id in sglang_extra_args is not a number: {value!r}",
                        key="sglang_extra_args",
                    ) from None
        return 0

    def rank_bases(self, addresses: Sequence[str], per_node: int) -> list[int]:
        """Node k runs ranks k*per .. k*per+per-1 (`--node-rank`)."""
        return [k * per_node for k in range(len(addresses))]

    def backend(self, host: Host) -> str:
        return host.var.dist_backend

    def dist_init_addr(self, head: Host, address: str) -> str:
        from ..plan import url_host

        return f"{url_host(address)}:{head.var.rendezvous_port}"

    def node_env(self, ctx: NodeContext) -> dict[str, str]:
        return {}

    def node_argv(self, ctx: NodeContext) -> tuple[str, ...]:
        argv: list[str] = [
            ctx.python, "-m", "sglang.launch_server",
            "--model-path", ctx.model_path, "--served-model-name", ctx.model_name,
            "--tp-size", str(ctx.tp), "--nnodes", str(ctx.nnodes),
            "--node-rank", str(ctx.node_rank), "--dist-init-addr", ctx.dist_init_addr,
            "--device", ctx.device, "--host", ctx.http_host, "--port", str(ctx.http_port),
            "--trust-remote-code",
        ]  # fmt: skip
        fraction = ctx.host.var.mem_fraction_static
        if fraction:
            argv += ["--mem-fraction-static", str(fraction)]
        argv += list(ctx.host.var.sglang_extra_args)
        return tuple(argv)

    def server_argv(self, ctx: NodeContext) -> tuple[str, ...]:
        return ()

    def server_env(self, ctx: NodeContext) -> dict[str, str]:
        return {}

    def ports(self, plan: LaunchPlan, node: NodePlan) -> list[dict[str, Any]]:
        ports = [{"address": node.http_address, "port": node.http_port, "what": "SGLang HTTP"}]
        if node.node_rank == 0:
            ports += [
                {"address": plan.rendezvous_address, "port": plan.rendezvous_port,
                 "what": "rendezvous"},
            ]  # fmt: skip
        return ports

    def preflight_config(self, plan: LaunchPlan, node: NodePlan) -> dict[str, Any]:
        """What remote/preflight.py needs: the collective over exactly the planned ranks."""
        return {
            "host": node.host,
            "node_rank": node.node_rank,
            "world_size": plan.tp,
            "device": plan.device,
            "ranks": [
                {
                    "rank": r.rank,
                    "local_rank": r.local_rank,
                    "device": r.device,
                    "physical_device": r.physical_device,
                    "env": r.env,
                }
                for r in node.ranks
            ],
            "env": node.env,
            "rendezvous": {"address": plan.rendezvous_address, "port": plan.rendezvous_port},
            "backend": plan.backend,
            "timeout": plan.preflight_timeout,
            "sizes": PREFLIGHT_SIZES.get(plan.backend, PREFLIGHT_SIZES["gloo"]),
        }

    def preflight_reporters(self, plan: LaunchPlan) -> list[str]:
        return [n.host for n in plan.nodes]

    def judge_preflight(
        self, plan: LaunchPlan, reports: Mapping[str, dict[str, Any] | None]
    ) -> PreflightVerdict:
        from ..judge import judge_preflight

        return judge_preflight(plan, reports, {})

    def ready(self, plan: LaunchPlan, node: NodePlan, timeout: float) -> int:
        from ..plan import url_host

        url = f"http://{url_host(node.http_address)}:{node.http_port}"
        return http_status(url + self.health_path(node.node_rank), timeout=timeout)

    def stop_argv(self, node: NodePlan) -> list[str]:
        return []


SGLANG = SGLang()
