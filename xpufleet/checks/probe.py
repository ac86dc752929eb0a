"""The probe itself: which interpreter ran it, whether any gatherer broke."""

from __future__ import annotations

from ..facts.node import NodeFacts
from . import PASS, WARN, Verdict, node_check, verdict
from .expect import Expect


@node_check("doctor.probe", "the probe ran and returned facts")
def check_probe(facts: NodeFacts, expect: Expect) -> Verdict:
    """The probe itself: which interpreter ran it and whether any gatherer broke."""
    kind = "python3" if facts.probe.kind == "python" else f"POSIX {facts.probe.kind}"
    if facts.probe.errors:
        shown = "; ".join(e[:120] for e in facts.probe.errors[:3])
        return verdict(
            WARN,
            f"the probe ({kind}) hit errors: {shown}, expected none",
            errors=facts.probe.errors,
        )
    return verdict(PASS, f"the probe ran under {kind} without errors, expected no errors")
