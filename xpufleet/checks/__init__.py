"""Doctor's checks: pure functions from facts to `Result`s, each under a stable dotted id.

Every id is registered here with `check(...)` when its module is imported; its runbook
link is the heading `## <id>` of docs/runbooks/doctor.md. `result()` refuses an
unregistered id, so the registry is exactly the set of ids doctor can print:
`runbook_links()` returns all their links, and the runbook link tests prove each one
lands on a real heading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..results import FAIL, PASS, SKIP, WARN, Result
from ..runbooks import RUNBOOK_DIR, slug

RUNBOOK = "doctor"


@dataclass(frozen=True)
class CheckInfo:
    id: str
    title: str
    scope: str  # "node" or "cluster"
    runbook: str
    #: names of facts this check reads that the lab may simulate (marker node.json)
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
    "REGISTRY",
    "check",
    "result",
    "runbook_link",
    "runbook_links",
]
