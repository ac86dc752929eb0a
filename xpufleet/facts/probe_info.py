"""Facts about the probe and the node itself: which interpreter ran the probe and what
broke in it, the hostname, the lab's marker (what is simulated) and the node's clock."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .registry import Fact


@dataclass(frozen=True)
class ProbeInfo:
    #: "python" or "sh" (the fallback without python3); "unknown" when not reported
    kind: str
    errors: list[str]


class Probe(Fact[ProbeInfo]):
    """The probe's kind and the errors its gatherers hit (gathered last)."""

    key = "probe"
    python = "probe_info()"
    last = True
    sh = """printf '{"kind": "sh", "schema": 1, "errors": []}'"""

    @staticmethod
    def parse(raw: Any) -> ProbeInfo:
        raw = raw if isinstance(raw, dict) else {}
        return ProbeInfo(str(raw.get("kind", "unknown")), [str(e) for e in raw.get("errors") or []])


class Hostname(Fact["str | None"]):
    key = "hostname"
    python = "socket.gethostname()"
    sh = "hostname 2>/dev/null | jstr"

    @staticmethod
    def parse(raw: Any) -> str | None:
        return str(raw or "").strip() or None


#: marker entries (paths, tools, APIs) -> the names checks declare they read
_MARKER_PREFIXES = (
    ("/sys/class/drm", "drm"),
    ("/sys/module/", "kernel_module"),
    ("/etc/OpenCL", "opencl_icd"),
    ("dpkg:", "packages"),
    ("rpm:", "packages"),
    ("torch", "torch"),
)


def _fact_key(entry: str) -> str:
    """'/sys/module/i915' -> 'kernel_module', '/opt/intel/oneapi' -> 'oneapi', ..."""
    for prefix, key in _MARKER_PREFIXES:
        if entry.startswith(prefix):
            return key
    if entry.rstrip("/").endswith("/oneapi"):
        return "oneapi"
    return entry


class LabMarker(Fact["frozenset[str] | None"]):
    """The lab's marker /opt/intel/.lab/node.json: the names of what it simulates
    (None on a real node)."""

    key = "lab"
    attr = "simulated"
    python = 'load_json("/opt/intel/.lab/node.json")'
    sh = "jfile /opt/intel/.lab/node.json"

    @staticmethod
    def parse(raw: Any) -> frozenset[str] | None:
        marker = raw
        if isinstance(raw, str):  # the sh probe sends the file's text
            try:
                marker = json.loads(raw)
            except ValueError:
                marker = {"lab": True}
        if not isinstance(marker, dict) or not marker.get("lab"):
            return None
        return frozenset(_fact_key(str(s)) for s in marker.get("simulated") or [])


@dataclass(frozen=True)
class ClockReading:
    #: the node's clock when the probe's shell started, and the probe's run time
    start: float
    elapsed: float
    resolution: float


@dataclass(frozen=True)
class Clock:
    #: node clock minus the control node's clock at the same instant (seconds)
    offset: float
    #: how far the estimate can be off (half the round-trip overhead + clock resolution)
    uncertainty: float


class NodeClock(Fact["ClockReading | None"]):
    """The node's clock at the probe's start (gathered last: the elapsed time)."""

    key = "clock"
    attr = "clock_reading"
    python = "clock_info()"
    last = True
    sh = 'printf \'{"start": %s, "elapsed": 0, "resolution": 1.0}\' "$(date +%s)"'

    @staticmethod
    def parse(raw: Any) -> ClockReading | None:
        if not isinstance(raw, dict):
            return None
        try:
            start = float(raw["start"])
            elapsed = max(0.0, float(raw.get("elapsed") or 0.0))
        except (KeyError, TypeError, ValueError):
            return None
        return ClockReading(start, elapsed, float(raw.get("resolution") or 0.0))


def clock_offset(
    reading: ClockReading | None, sent: float | None, received: float | None
) -> Clock | None:
    """NTP-style: the probe started half the round-trip overhead after `sent`."""
    if reading is None or sent is None or received is None:
        return None
    overhead = max(0.0, (received - sent) - reading.elapsed)
    offset = reading.start - (sent + overhead / 2)
    return Clock(offset=offset, uncertainty=overhead / 2 + reading.resolution)
