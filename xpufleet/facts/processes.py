"""Process facts: who holds /dev/dri or listens on the SGLang/rendezvous ports (/proc)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .registry import Fact


@dataclass(frozen=True)
class Holder:
    pid: int
    comm: str | None
    cmdline: str | None
    same_namespace: bool


@dataclass(frozen=True)
class Listener:
    address: str
    port: int
    holders: list[Holder]


@dataclass(frozen=True)
class Busy:
    dri: list[tuple[str, Holder]]
    listeners: list[Listener]
    complete: bool


def _holder(item: dict[str, Any]) -> Holder:
    return Holder(
        int(item.get("pid", 0)), item.get("comm"), item.get("cmdline"), bool(item.get("same_ns"))
    )


class BusyDevices(Fact["Busy | None"]):
    """Processes holding /dev/dri nodes or listening on the configured ports."""

    key = "busy"
    python = 'busy_facts(set(PARAMS.get("ports") or []))'

    @staticmethod
    def parse(raw: Any) -> Busy | None:
        if not isinstance(raw, dict):
            return None
        dri = [(str(d.get("path")), _holder(d)) for d in raw.get("dri") or []]
        listeners = [
            Listener(
                str(s.get("addr")), int(s.get("port", 0)), [_holder(p) for p in s.get("pids", [])]
            )
            for s in raw.get("listen") or []
        ]
        return Busy(dri, listeners, bool(raw.get("complete", True)))


class Access(Fact["dict[str, Any] | None"]):
    """What a login that is not root may lack: render nodes' group and access, locked
    memory, writable configured paths (read by checks/access.py)."""

    key = "access"
    python = "access_facts()"

    @staticmethod
    def parse(raw: Any) -> dict[str, Any] | None:
        return raw if isinstance(raw, dict) else None
