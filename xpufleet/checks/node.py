"""Node checks: one node's facts against what its inventory variables expect.

The checks live in one module per area and declare themselves with `@node_check`;
importing the areas here registers them; `AREAS` orders every host's results.
Statuses: fail = serving will not work (or will hang), warn = doctor cannot verify
something or it is merely suspicious, skip = the fact does not apply yet (e.g. no
Python environment before provision).
"""

from __future__ import annotations

from ..facts.node import NodeFacts
from ..results import Result
from . import (
    FAIL,
    NODE_CHECKS,
    REGISTRY,
    SKIP,
    NodeCheck,
    access,
    gpu,
    kernel,
    network,
    oneapi,
    probe,
    processes,
    python_stack,
    resources,
    result,
    weights,
)
from .expect import Expect

__all__ = ["AREAS", "Expect", "NodeCheck", "node_checks", "probe_failed", "run_node_checks"]

#: the areas in the order doctor reports their checks (within an area: as defined)
AREAS = (probe, gpu, oneapi, python_stack, network, resources, weights, processes, access, kernel)
_AREA_ORDER = {area.__name__: index for index, area in enumerate(AREAS)}


def node_checks() -> tuple[NodeCheck, ...]:
    """Every registered node check, in the order doctor reports them."""
    return tuple(sorted(NODE_CHECKS, key=lambda c: _AREA_ORDER[c.func.__module__]))


def mark_simulated(item: Result, simulated: frozenset[str] | None) -> Result:
    """On a lab node, say so on every result that rests on a simulated fact (an empty
    marker list means everything the check reads may be simulated)."""
    if simulated is None:
        return item
    reads = REGISTRY[item.id].simulated_facts
    if item.status != SKIP and reads and (not simulated or reads & simulated):
        item.message += " (simulated)"
        item.data["simulated"] = True
    return item


def run_node_checks(facts: NodeFacts, expect: Expect) -> list[Result]:
    """Every node check, in a stable order; a check that crashes is a failed result
    under its own id (one broken check must not hide the others)."""
    results = []
    for node_check in node_checks():
        try:
            item = node_check(facts, expect)
        except Exception as exc:  # noqa: BLE001 - reported under the check's id
            item = result(node_check.id, FAIL, f"{node_check.name} crashed: {exc!r}")
        results.append(mark_simulated(item, facts.simulated))
    return results


def probe_failed(message: str) -> Result:
    """The probe gave no facts: the host's one result, under doctor.probe."""
    return result(probe.check_probe.id, FAIL, message)
