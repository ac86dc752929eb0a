"""Parser of `sycl-ls` output, old and new formats (fixtures 07a-07f).

New (oneAPI 2024.1+): `[level_zero:gpu][level_zero:0] Platform, Device 12.60.7 [1.3.26918]`.
Old: `[ext_oneapi_level_zero:gpu:0] Intel(R) Level-Zero, Device 1.3 [1.3.25733]`, and
copies of it wrapped after the version (the driver bracket on the next line). In FLAT
mode a Max 1550 card shows one Level Zero device per tile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

UNKNOWN, EMPTY = "unknown", "empty"

_NEW = re.compile(
    r"^\[(?P<backend>[a-z_]+):(?P<type>[a-z]+)\]\[[a-z_]+:(?P<index>\d+)\]\s+(?P<rest>.*)$"
)
_OLD = re.compile(r"^\[(?P<backend>[a-z_]+):(?P<type>[a-z]+):(?P<index>\d+)\]\s+(?P<rest>.*)$")
_DRIVER = re.compile(r"\s*\[(?P<driver>[^\]]*)\]\s*$")
_LONE_DRIVER = re.compile(r"^\[(?P<driver>[\w.+-]+)\]\s*$")
_OPENCL_TAIL = re.compile(r"\s+OpenCL\s+\d.*$")
_VERSION_TAIL = re.compile(r"\s+(?P<version>\d+(?:\.\d+)+)\s*$")

#: lines of prompts, traces, verbose sections and warnings around the device list
_NOISE = ("$", "SYCL_", "Platforms:", "Platform [", "Warning", "WARNING")

_BACKENDS = {
    "level_zero": "level_zero",
    "ext_oneapi_level_zero": "level_zero",
    "opencl": "opencl",
    "ext_oneapi_unified_runtime": "unified_runtime",
    "cuda": "cuda",
    "ext_oneapi_cuda": "cuda",
    "hip": "hip",
    "ext_oneapi_hip": "hip",
    "native_cpu": "native_cpu",
}


@dataclass(frozen=True)
class SyclDevice:
    backend: str
    type: str
    index: int
    platform: str
    name: str
    version: str | None = None
    driver: str | None = None


@dataclass(frozen=True)
class SyclListing:
    format: str
    devices: list[SyclDevice] = field(default_factory=list)

    @property
    def level_zero_gpus(self) -> list[SyclDevice]:
        return [d for d in self.devices if d.backend == "level_zero" and d.type == "gpu"]

    @property
    def opencl_gpus(self) -> list[SyclDevice]:
        return [d for d in self.devices if d.backend == "opencl" and d.type == "gpu"]


def _split_rest(rest: str) -> tuple[str, str, str | None, str | None]:
    """'Platform, Device name 1.3 [1.3.25733]' -> (platform, name, version, driver)."""
    driver = None
    bracket = _DRIVER.search(rest)
    if bracket:
        driver = bracket.group("driver").strip() or None
        rest = rest[: bracket.start()]
    platform, sep, device = rest.partition(", ")
    if not sep:
        platform, device = "", rest
    device = device.strip()
    version = None
    if _OPENCL_TAIL.search(device):
        version = _OPENCL_TAIL.search(device).group(0).strip()  # type: ignore[union-attr]
        device = _OPENCL_TAIL.sub("", device)
    else:
        tail = _VERSION_TAIL.search(device)
        if tail:
            version = tail.group("version")
            device = device[: tail.start()]
    return platform.strip(), device.strip(), version, driver


def parse_sycl_ls(text: str) -> SyclListing:
    """Every device line of `sycl-ls` (verbose sections, prompts and traces are skipped)."""
    devices: list[SyclDevice] = []
    formats: set[str] = set()
    meaningful = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        lone = _LONE_DRIVER.match(line)
        if lone and devices and devices[-1].driver is None:
            last = devices[-1]
            devices[-1] = SyclDevice(
                last.backend,
                last.type,
                last.index,
                last.platform,
                last.name,
                last.version,
                lone.group("driver"),
            )
            continue
        match = _NEW.match(line)
        fmt = "new"
        if not match:
            match = _OLD.match(line)
            fmt = "old"
        if not match:
            if not line.startswith(_NOISE):
                meaningful = meaningful or not line.startswith((" ", "\t"))
            continue
        formats.add(fmt)
        platform, name, version, driver = _split_rest(match.group("rest"))
        backend = _BACKENDS.get(match.group("backend"), match.group("backend"))
        devices.append(
            SyclDevice(
                backend,
                match.group("type"),
                int(match.group("index")),
                platform,
                name,
                version,
                driver,
            )
        )
    if not devices:
        return SyclListing(UNKNOWN if meaningful else EMPTY)
    return SyclListing(
        "new" if formats == {"new"} else "old" if formats == {"old"} else "mixed", devices
    )
