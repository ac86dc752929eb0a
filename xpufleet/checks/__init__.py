"""Doctor's checks: pure functions from facts to `Result`s, each under a stable dotted id.

A node check is declared where it lives, one module per area (gpu, oneapi,
python_stack, network, resources, weights, processes, access, kernel):

    @node_check("gpu.driver", "GPU kernel driver", reads=("drm", "kernel_module"))
    def check_gpu_driver(facts: NodeFacts, expect: Expect) -> Verdict:
        return verdict(PASS, "found ...")

The decorator registers the id (once, at import) and turns the function's `Verdict`
into a `Result` under that id, so a check cannot report under another's id and a
check that crashes is reported under its own (`checks.node.run_node_checks`). Cluster
checks register their ids with `check(...)`. Every id's runbook link is the heading
`## <id>` of docs/runbooks/doctor.md; `result()` refuses an unregistered id, so the
registry is exactly the set of ids doctor can print: `runbook_links()` returns all
their links, and the runbook link tests prove each one lands on a real heading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..results import FAIL, PASS, SKIP, WARN, Result
from ..runbooks import RUNBOOK_DIR, slug

if TYPE_CHECKING:
    from ..facts.node import NodeFacts
    from .expect import Expect

RUNBOOK = "doctor"


@dataclass(frozen=True)
class CheckInfo:
    id: str
    title: str
    scope: str  # "node" or "cluster"
    runbook: str
    #: what the check rests on that a lab may simulate (names of the lab's marker
    #: node.json as facts.node maps them): a result reading one is "(simulated)"
    simulated_facts: frozenset[str] = frozenset()


REGISTRY: dict[str, CheckInfo] = {}


def check(check_id: str, title: str, scope: str, simulated: tuple[str, ...] = ()) -> str:
    """Register a check id (once, at import) and return it."""
    if check_id in REGISTRY:
        raise ValueError(f"check id {check_id} registered twice")
    info = CheckInfo(check_id, title, scope, runbook_link(check_id), frozenset(simulated))
    REGISTRY[check_id] = info
    return check_id


def runbook_link(check_id: str) -> str:
    """The link every result of `check_id` carries: the runbook heading `## <id>`."""
    return f"{RUNBOOK_DIR}/{RUNBOOK}.md#{slug(check_id)}"


@dataclass(frozen=True)
class Verdict:
    """What a node check found: its status, message and data (the id is the check's)."""

    status: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)


def verdict(status: str, message: str, **data: Any) -> Verdict:
    return Verdict(status, message, dict(data))


@dataclass(frozen=True)
class NodeCheck:
    """A registered node check: calling it returns a `Result` under its own id."""

    id: str
    func: Callable[[NodeFacts, Expect], Verdict]

    @property
    def name(self) -> str:
        """The function's name (`check_gpu_driver`), for messages about the check itself."""
        return self.func.__name__

    def __call__(self, facts: NodeFacts, expect: Expect | None = None) -> Result:
        found = self.func(facts, expect)  # type: ignore[arg-type] - checks that need none
        return result(self.id, found.status, found.message, **found.data)


#: every node check in registration order (the order of checks.node's area imports)
NODE_CHECKS: list[NodeCheck] = []


def node_check(
    check_id: str, title: str, reads: tuple[str, ...] = ()
) -> Callable[[Callable[[NodeFacts, Expect], Verdict]], NodeCheck]:
    """Declare a node check beside its code; `reads` as CheckInfo.simulated_facts."""

    def register(func: Callable[[NodeFacts, Expect], Verdict]) -> NodeCheck:
        found = NodeCheck(check(check_id, title, "node", reads), func)
        NODE_CHECKS.append(found)
        return found

    return register


def runbook_links() -> list[str]:
    """Every runbook link doctor can print (hook of tests/unit/test_runbook_links.py)."""
    from . import cluster, node  # noqa: F401 - importing registers their checks

    return sorted({info.runbook for info in REGISTRY.values()})


def result(check_id: str, status: str, message: str, **data: Any) -> Result:
    """A Result for a registered id; warnings and failures carry their runbook link."""
    if check_id not in REGISTRY:
        raise KeyError(f"unregistered check id {check_id}")
    runbook = REGISTRY[check_id].runbook if status in (WARN, FAIL) else None
    return Result(check_id, status, message, runbook, dict(data))


__all__ = [
    "FAIL",
    "PASS",
    "SKIP",
    "WARN",
    "NODE_CHECKS",
    "REGISTRY",
    "NodeCheck",
    "Verdict",
    "check",
    "node_check",
    "result",
    "runbook_link",
    "runbook_links",
    "verdict",
]
