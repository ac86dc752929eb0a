"""Launch's engine seam: what differs between serving engines, behind one interface.

The planner (plan.py) lays ranks on nodes and devices and builds each node's
environment the same way for every engine; an `Engine` adds the engine's own parts:
- the command line of each node (`node_argv`) and, where one node serves the API beside
  its node process, that server's (`server_argv`, vLLM's head);
- its ports and HTTP server (`http`, `serves_http`, `ports`), the health path and the
  readiness rule (`health_path`, `ready`);
- the launch script template, the log file name (`log_file`), the processes the node's
  supervisor must recognise (`patterns`: shipped in run.json, since the supervisor is a
  standalone script), and what `invoke stop` runs after the supervisor (`stop_argv`);
- who reports a preflight and how it is judged (`preflight_reporters`, `judge_preflight`).

Engines: `sglang` (engines/sglang.py), `vllm` (engines/vllm.py). Chosen by `--engine`,
else the inventory variable `engine` of node 0 (default sglang).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import PlanError
from ...host import Host

if TYPE_CHECKING:
    from ..judge import PreflightVerdict
    from ..plan import LaunchPlan, NodePlan


@dataclass(frozen=True)
class ProcessPatterns:
    """How a node's supervisor recognises the engine's processes and log lines (regular
    expressions as strings: they travel in run.json to remote/supervisor.py)."""

    #: (role, pattern) over a process's comm and command line, checked in this order
    roles: tuple[tuple[str, str], ...]
    #: the role whose processes are the ranks
    rank_role: str
    #: helper roles whose death breaks serving (watched like ranks)
    watched_helpers: tuple[str, ...]
    #: a log line's rank tag: group `rank` (the rank itself) or `pid` (a rank's pid)
    log_prefix: str
    #: how the launch script's own process is named when it dies
    server_name: str
    #: a title carrying the rank (group 1), if the engine sets one
    rank_title: str = ""
    #: where ranks are looked for: the server's `children`, or all its `descendants`
    discovery: str = "children"
    #: ranks are taken only once every rank's tag is in the log (SGLang's spawn order)
    needs_log_tags: bool = True
    #: the roles of processes that are not titled yet (wait for them)
    pending_roles: tuple[str, ...] = ()
    #: how the ranks were told apart (status shows it)
    identified_by: str = ""
    #: check the card `xpu-smi ps` shows each rank process on against the plan (run.json
    #: `rank_devices`); without a spawn record, the ranks are tied to processes by it
    by_device: bool = False
    #: a line each rank process writes to its OWN output (its stdout file) naming its rank
    #: (group `rank`): the ranks are taken from it, not from start order
    rank_line: str = ""
    #: (function, parameter): the engine's server starts each rank process with
    #: multiprocessing, `function` as target and the rank as `parameter`; the preflight
    #: wrapper records every such start (run.json `spawn_record`) and the ranks are taken
    #: from that record, the parent's own word, not from start order
    spawned_rank: tuple[str, str] = ("", "")

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["roles"] = [list(r) for r in self.roles]
        return doc


@dataclass(frozen=True)
class NodeContext:
    """What an engine needs to write one node's command lines."""

    host: Host
    node_rank: int
    nnodes: int
    tp: int
    pp: int
    per_node: int
    model_path: str
    model_name: str
    device: str
    python: str
    address: str  # this node's address on the rendezvous NIC
    head_address: str  # node 0's
    rendezvous_port: int
    dist_init_addr: str
    http_host: str
    http_port: int


class Engine(Protocol):
    """The engine-specific parts of a launch (see the module docstring)."""

    name: str
    title: str
    log_file: str
    #: what readiness proves beyond the health path (said in the report)
    ready_note: str
    template: str
    patterns: ProcessPatterns
    #: inventory variables every node of one launch must agree on (besides the planner's)
    uniform_vars: tuple[str, ...]
    #: node scripts shipped into each run directory besides supervisor.py
    node_scripts: tuple[str, ...]
    #: seconds from SIGTERM to SIGKILL when the supervisors abort a run because something
    #: died (None: the same grace as for a stop, render.GRACE_S)
    abort_grace_s: float | None

    def http(self, host: Host) -> tuple[str, int]: ...

    def serves_http(self, node_rank: int) -> bool: ...

    def health_path(self, node_rank: int) -> str: ...

    def server_name(self, node_rank: int) -> str: ...

    def base_gpu_id(self, host: Host) -> int: ...

    def rank_bases(self, addresses: Sequence[str], per_node: int) -> list[int]: ...

    def backend(self, host: Host) -> str: ...

    def dist_init_addr(self, head: Host, address: str) -> str: ...

    def node_env(self, ctx: NodeContext) -> dict[str, str]: ...

    def node_argv(self, ctx: NodeContext) -> tuple[str, ...]: ...

    def server_argv(self, ctx: NodeContext) -> tuple[str, ...]: ...

    def server_env(self, ctx: NodeContext) -> dict[str, str]: ...

    def ports(self, plan: LaunchPlan, node: NodePlan) -> list[dict[str, Any]]: ...

    def preflight_config(self, plan: LaunchPlan, node: NodePlan) -> dict[str, Any]: ...

    def preflight_reporters(self, plan: LaunchPlan) -> list[str]: ...

    def judge_preflight(
        self, plan: LaunchPlan, reports: Mapping[str, dict[str, Any] | None]
    ) -> PreflightVerdict: ...

    def ready(self, plan: LaunchPlan, node: NodePlan, timeout: float) -> int: ...

    def stop_argv(self, node: NodePlan) -> list[str]: ...


def engine_names() -> tuple[str, ...]:
    return ("sglang", "vllm")


def get_engine(name: str) -> Engine:
    """The engine called `name`, or a PlanError naming the ones there are (exit 2)."""
    from . import sglang, vllm

    engines: dict[str, Engine] = {"sglang": sglang.SGLANG, "vllm": vllm.VLLM}
    if name not in engines:
        raise PlanError(
            f"unknown engine {name!r}: choose {' or '.join(engine_names())}", key="engine"
        )
    return engines[name]
