"""Facts as one class each (pyinfra-style): the key it travels under, the snippet that
gathers it on the node and `parse(raw) -> T` on the control node.

    class Meminfo(Fact[Memory | None]):
        key, attr = "meminfo", "memory"
        python = 'read("/proc/meminfo")'  # an expression of facts/remote/probe.py
        sh = "jfile /proc/meminfo"          # the POSIX-sh fallback: the same JSON value
        parse = staticmethod(parse_meminfo)

Defining the class registers it (`FACTS`, in import order). Everything else is made
from the registry: the probe's fact list and the sh fallback's snippets and parameter
lines (facts.probe), and NodeFacts' attributes with their parsers (facts.node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

T = TypeVar("T")


class Fact(Generic[T]):
    """One fact of a node. Subclasses set the class attributes below."""

    #: the name its raw value travels under (the probe's section, tests' raw dicts)
    key: ClassVar[str]
    #: the NodeFacts attribute holding the parsed value (default: key)
    attr: ClassVar[str] = ""
    #: a Python expression evaluated on the node by facts/remote/probe.py (its helpers,
    #: PARAMS, ROOT, SETVARS); its value is sent as JSON
    python: ClassVar[str]
    #: the POSIX-sh fallback printing the same JSON (helpers of facts/remote/probe.sh;
    #: parameters as $P_<NAME>); ":" = nothing, the fact is absent without python3
    sh: ClassVar[str] = ":"
    #: probe parameters (facts.probe.probe_params keys) the sh snippet reads
    params: ClassVar[tuple[str, ...]] = ()
    #: slow (tools, other processes, the network): gathered in a thread
    background: ClassVar[bool] = False
    #: gathered after all others (the probe's own errors, the clock's elapsed time)
    last: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "key" in cls.__dict__:
            if any(f.key == cls.key for f in FACTS):
                raise ValueError(f"fact key {cls.key} registered twice")
            if not cls.attr:
                cls.attr = cls.key
            FACTS.append(cls)

    @staticmethod
    def parse(raw: Any) -> T:
        """The typed value from the raw JSON value (None when the probe did not send it)."""
        raise NotImplementedError


#: every registered fact, in registration order
FACTS: list[type[Fact[Any]]] = []


def sh_params() -> tuple[str, ...]:
    """The parameters the sh fallback reads, once each, in registry order."""
    seen: dict[str, None] = {}
    for fact in FACTS:
        seen.update(dict.fromkeys(fact.params))
    return tuple(seen)


def sh_variable(param: str) -> str:
    return "P_" + param.upper()


@dataclass(frozen=True)
class ToolRun:
    """One tool run by the probe: absent, timed out, or its exit status and output."""

    missing: bool
    rc: int | None = None
    out: str = ""
    err: str = ""
    timeout: bool = False

    @property
    def ok(self) -> bool:
        return not self.missing and not self.timeout and self.rc == 0

    def why_not(self) -> str:
        if self.missing:
            return "not installed"
        if self.timeout:
            return "timed out"
        tail = (self.err or self.out).strip().splitlines()
        return f"exit {self.rc}" + (f": {tail[-1][:200]}" if tail else "")


def tool_run(raw: Any) -> ToolRun | None:
    if not isinstance(raw, dict):
        return None
    return ToolRun(
        missing=bool(raw.get("missing")),
        rc=raw.get("rc"),
        out=str(raw.get("out") or ""),
        err=str(raw.get("err") or ""),
        timeout=bool(raw.get("timeout")),
    )
