"""Typed facts of one node, built from the probe's raw values on the control node.

NodeFacts has one attribute per registered fact (`Fact.attr`: `facts.drm`,
`facts.tools`, `facts.env`, ...), each the fact's `parse` of its raw value, plus
`host`, `raw` and `clock` (the node's clock offset, from the clock reading and the
round trip's times). Importing the fact areas here registers them; checks only ever
see these typed values.
"""

from __future__ import annotations

from typing import Any

from . import gpu, kernel, network, probe_info, processes, python_env, system, weights
from .probe_info import Clock, clock_offset
from .registry import FACTS

#: the fact areas (importing them registers their facts)
AREAS = (probe_info, gpu, system, kernel, python_env, network, processes, weights)


class NodeFacts:
    """Everything doctor learned about one node (see the module docstring)."""

    def __init__(
        self,
        host: str,
        values: dict[str, Any],
        *,
        raw: dict[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.host = host
        self.raw = raw if raw is not None else {}
        self.clock = clock
        self._values = values

    def __getattr__(self, name: str) -> Any:
        values = self.__dict__.get("_values", {})
        if name in values:
            return values[name]
        raise AttributeError(f"NodeFacts has no fact {name!r}")

    def __repr__(self) -> str:
        return f"NodeFacts({self.host!r})"


def parse_facts(
    host: str, raw: dict[str, Any], *, sent: float | None = None, received: float | None = None
) -> NodeFacts:
    """Typed facts from the probe's raw values (python or sh probe) and the round trip's
    times: every registered fact's `parse` of `raw[key]` (None when not sent)."""
    values = {fact.attr: fact.parse(raw.get(fact.key)) for fact in FACTS}
    return NodeFacts(
        host, values, raw=raw, clock=clock_offset(values["clock_reading"], sent, received)
    )
