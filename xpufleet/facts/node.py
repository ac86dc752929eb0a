"""Typed facts of one node, built from the probe's raw JSON on the control node.

`parse_facts` is where every raw text the probe brought back (tool output, sysfs
files, listings) is parsed; checks only ever see these dataclasses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..nodestate import InstalledWheel, parse_node_state
from ..nodestate import normalize as normalize_name
from .devices import INTEL_VENDOR, normalize_pci_id
from .kernel import Fabric, Kernel, parse_fabric, parse_kernel
from .packages import Package, parse_dpkg, parse_rpm
from .sycl import SyclListing, parse_sycl_ls
from .system import (
    InterfaceAddress,
    Memory,
    OneApi,
    parse_ip_json,
    parse_ip_text,
    parse_meminfo,
    parse_oneapi,
)
from .weights import ModelDir, parse_model
from .xpusmi import XpuSmiDiscovery, XpuSmiVersion, parse_discovery, parse_version


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


def _tool(raw: Any) -> ToolRun | None:
    if not isinstance(raw, dict):
        return None
    return ToolRun(
        missing=bool(raw.get("missing")),
        rc=raw.get("rc"),
        out=str(raw.get("out") or ""),
        err=str(raw.get("err") or ""),
        timeout=bool(raw.get("timeout")),
    )


@dataclass(frozen=True)
class DrmCard:
    card: str
    vendor: str | None
    device: str | None
    driver: str | None
    pci_slot: str | None

    @property
    def intel(self) -> bool:
        return self.vendor == INTEL_VENDOR


@dataclass(frozen=True)
class KernelModule:
    name: str
    present: bool
    version: str | None


@dataclass(frozen=True)
class GpuTools:
    xpu_smi_path: str | None
    sycl_ls_path: str | None
    xpu_smi_version_run: ToolRun | None
    xpu_smi_discovery_run: ToolRun | None
    xpu_smi_json_run: ToolRun | None
    sycl_ls_run: ToolRun | None
    xpu_smi_version: XpuSmiVersion | None
    discovery: XpuSmiDiscovery | None
    sycl: SyclListing | None


@dataclass(frozen=True)
class TorchDevice:
    name: str | None
    total_memory: int | None


@dataclass(frozen=True)
class Torch:
    version: str | None
    xpu_built: bool
    xpu_available: bool | None
    device_count: int | None
    devices: list[TorchDevice]
    xccl: bool | None
    error: str | None
    #: torch.version.xpu: the SYCL compiler of an XPU build; None on CPU/CUDA builds
    xpu_version: str | None = None


@dataclass(frozen=True)
class PythonEnv:
    venv: str | None
    present: bool
    python_version: str | None
    packages: dict[str, str]
    torch: Torch | None
    torch_error: str | None
    sqlite: str | None
    error: str | None
    #: xpufleet/facts/imports_probe.py's result: {"ok": [...], "failed": {...} | None}
    imports: dict[str, Any] | None = None
    #: {"version": ..., "intel_backend": bool} of the env's Triton, None without one
    triton: dict[str, Any] | None = None
    imports_error: str | None = None

    def version_of(self, *names: str) -> tuple[str, str] | None:
        """(name, version) of the first of `names` that is installed."""
        for name in names:
            version = self.packages.get(normalize_name(name))
            if version:
                return normalize_name(name), version
        return None


def describe_import_failure(failed: dict[str, str | None]) -> str:
    """`import sglang.launch_server` failed: No module named 'orjson' (distribution orjson)."""
    text = f"import {failed.get('module')} failed: {failed.get('error')}"
    missing = failed.get("missing")
    if missing:
        dist = failed.get("distribution")
        text += (
            f" (module {missing} comes from distribution {dist}: in the lock but not installed)"
            if dist
            else f" (module {missing}: no distribution of the lock provides it)"
        )
    return text


@dataclass(frozen=True)
class Disk:
    path: str
    checked: str
    free_bytes: int | None
    total_bytes: int | None
    error: str | None = None


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


@dataclass(frozen=True)
class Rendezvous:
    """This node's TCP connect to one peer's rendezvous port."""

    host: str
    address: str
    port: int
    result: str
    detail: str


@dataclass(frozen=True)
class Nic:
    name: str
    exists: bool
    addresses: list[InterfaceAddress]


@dataclass(frozen=True)
class Clock:
    #: node clock minus the control node's clock at the same instant (seconds)
    offset: float
    #: how far the estimate can be off (half the round-trip overhead + clock resolution)
    uncertainty: float


@dataclass
class NodeFacts:
    """Everything doctor learned about one node."""

    host: str
    probe_kind: str
    probe_errors: list[str]
    hostname: str | None
    hostname_addresses: list[str] | None
    hostname_error: str | None
    address_resolved: list[str] | None
    python_version: str | None
    clock: Clock | None
    drm: list[DrmCard]
    modules: dict[str, KernelModule]
    packages: dict[str, Package]
    package_manager: str | None
    opencl_icds: dict[str, str]
    tools: GpuTools
    oneapi: OneApi | None
    env: PythonEnv
    wheels: dict[str, InstalledWheel] | None
    nic: Nic | None
    disk: Disk | None
    memory: Memory | None
    busy: Busy | None
    #: peer host -> outcome of connecting to its rendezvous port (None: not tested)
    rendezvous: dict[str, Rendezvous] | None
    #: the lab's marker: names of the facts it simulates (None on a real node)
    simulated: frozenset[str] | None = None
    #: the model directory at model_path (None: not probed)
    model: ModelDir | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    #: kernel release, ptrace_scope, uid (None: the probe did not report them)
    kernel: Kernel | None = None
    #: libfabric providers from `fi_info -l` (None: not reported)
    fabric: Fabric | None = None


def _uevent(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _drm(raw: Any) -> list[DrmCard]:
    cards = []
    for item in raw if isinstance(raw, list) else []:
        uevent = _uevent(item.get("uevent"))
        pci = uevent.get("PCI_ID", "")
        vendor = normalize_pci_id(item.get("vendor") or pci.partition(":")[0] or None)
        device = normalize_pci_id(item.get("device") or pci.partition(":")[2] or None)
        cards.append(
            DrmCard(
                card=str(item.get("card")),
                vendor=vendor,
                device=device,
                driver=uevent.get("DRIVER"),
                pci_slot=uevent.get("PCI_SLOT_NAME"),
            )
        )
    return cards


def _modules(raw: Any) -> dict[str, KernelModule]:
    out = {}
    for name, item in (raw or {}).items():
        if isinstance(item, dict):
            version = item.get("version") or item.get("modinfo_version")
            out[name] = KernelModule(name, bool(item.get("present")), version)
    return out


def _packages(raw: Any) -> tuple[dict[str, Package], str | None]:
    raw = raw if isinstance(raw, dict) else {}
    dpkg, rpm = _tool(raw.get("dpkg")), _tool(raw.get("rpm"))
    found: dict[str, Package] = {}
    manager = None
    if dpkg and not dpkg.missing:
        manager = "dpkg"
        found.update(parse_dpkg(dpkg.out))
    if rpm and not rpm.missing:
        manager = manager or "rpm"
        found.update(parse_rpm(rpm.out))
    return found, manager


def _tools(raw: Any) -> GpuTools:
    raw = raw if isinstance(raw, dict) else {}
    paths = raw.get("paths") or {}
    version_run = _tool(raw.get("xpu_smi_version"))
    json_run = _tool(raw.get("xpu_smi_discovery_json"))
    table_run = _tool(raw.get("xpu_smi_discovery"))
    sycl_run = _tool(raw.get("sycl_ls"))
    version = parse_version(version_run.out) if version_run and version_run.ok else None
    discovery = None
    json_text = json_run.out if json_run and json_run.ok else None
    table_text = table_run.out if table_run and table_run.ok else None
    if json_text is not None or table_text is not None:
        discovery = parse_discovery(json_text, table_text)
    sycl = parse_sycl_ls(sycl_run.out) if sycl_run and sycl_run.ok else None
    return GpuTools(
        xpu_smi_path=paths.get("xpu-smi") or None,
        sycl_ls_path=paths.get("sycl-ls") or None,
        xpu_smi_version_run=version_run,
        xpu_smi_discovery_run=table_run,
        xpu_smi_json_run=json_run,
        sycl_ls_run=sycl_run,
        xpu_smi_version=version,
        discovery=discovery,
        sycl=sycl,
    )


def _torch(raw: Any) -> Torch | None:
    if not isinstance(raw, dict):
        return None
    devices = [
        TorchDevice(d.get("name"), d.get("total_memory"))
        for d in raw.get("devices") or []
        if isinstance(d, dict)
    ]
    return Torch(
        version=raw.get("version"),
        xpu_built=bool(raw.get("xpu_built")),
        xpu_available=raw.get("xpu_available"),
        device_count=raw.get("device_count"),
        devices=devices,
        xccl=raw.get("xccl"),
        error=raw.get("xpu_error") or raw.get("xccl_error"),
        xpu_version=str(raw["xpu_version"]) if raw.get("xpu_version") else None,
    )


def _env(raw: Any) -> PythonEnv:
    raw = raw if isinstance(raw, dict) else {}
    if raw.get("probe_error"):
        raw = {"present": True, "error": f"the probe could not run it: {raw['probe_error']}"}
    result = raw.get("result") if isinstance(raw.get("result"), dict) else None
    packages = {
        normalize_name(str(k)): str(v) for k, v in ((result or {}).get("packages") or {}).items()
    }
    error = None
    if raw.get("present") and result is None:
        error = str(raw.get("error") or "the environment's python printed nothing")
    elif not raw.get("present") and raw.get("error"):
        error = str(raw["error"])
    return PythonEnv(
        venv=raw.get("venv"),
        present=bool(raw.get("present")),
        python_version=(result or {}).get("python"),
        packages=packages,
        torch=_torch((result or {}).get("torch")),
        torch_error=(result or {}).get("torch_error"),
        sqlite=(result or {}).get("sqlite"),
        error=error,
        imports=_dict_or_none((result or {}).get("imports")),
        triton=_dict_or_none((result or {}).get("triton")),
        imports_error=(result or {}).get("imports_error"),
    )


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _nic(raw: Any) -> Nic | None:
    if not isinstance(raw, dict):
        return None
    addresses: list[InterfaceAddress] = []
    if raw.get("ip_json"):
        addresses = parse_ip_json(raw["ip_json"])
    elif raw.get("ip_text"):
        addresses = parse_ip_text(raw["ip_text"])
    elif isinstance(raw.get("ioctl"), list):
        addresses = [
            InterfaceAddress(str(a["local"]), int(a["prefixlen"]))
            for a in raw["ioctl"]
            if "local" in a
        ]
    return Nic(str(raw.get("name")), bool(raw.get("exists")), addresses)


def _disk(raw: Any) -> Disk | None:
    if not isinstance(raw, dict):
        return None
    return Disk(
        path=str(raw.get("path")),
        checked=str(raw.get("checked")),
        free_bytes=raw.get("free"),
        total_bytes=raw.get("total"),
        error=raw.get("error"),
    )


def _holder(item: dict[str, Any]) -> Holder:
    return Holder(
        int(item.get("pid", 0)), item.get("comm"), item.get("cmdline"), bool(item.get("same_ns"))
    )


def _busy(raw: Any) -> Busy | None:
    if not isinstance(raw, dict):
        return None
    dri = [(str(d.get("path")), _holder(d)) for d in raw.get("dri") or []]
    listeners = [
        Listener(str(s.get("addr")), int(s.get("port", 0)), [_holder(p) for p in s.get("pids", [])])
        for s in raw.get("listen") or []
    ]
    return Busy(dri, listeners, bool(raw.get("complete", True)))


def _rendezvous(raw: Any) -> dict[str, Rendezvous] | None:
    if not isinstance(raw, list):
        return None
    out = {}
    for item in raw:
        if isinstance(item, dict) and item.get("host"):
            out[str(item["host"])] = Rendezvous(
                str(item["host"]),
                str(item.get("address")),
                int(item.get("port", 0)),
                str(item.get("result")),
                str(item.get("detail", "")),
            )
    return out


def _clock(raw: Any, sent: float | None, received: float | None) -> Clock | None:
    """NTP-style: the probe started half the round-trip overhead after `sent`."""
    if not isinstance(raw, dict) or sent is None or received is None:
        return None
    try:
        start = float(raw["start"])
        elapsed = max(0.0, float(raw.get("elapsed") or 0.0))
    except (KeyError, TypeError, ValueError):
        return None
    overhead = max(0.0, (received - sent) - elapsed)
    offset = start - (sent + overhead / 2)
    resolution = float(raw.get("resolution") or 0.0)
    return Clock(offset=offset, uncertainty=overhead / 2 + resolution)


def _wheels(text: Any) -> dict[str, InstalledWheel] | None:
    """The node's installed-wheels manifest (provision's format); None when absent."""
    if not isinstance(text, str):
        return None
    return parse_node_state(text)


def _simulated(raw: dict[str, Any]) -> frozenset[str] | None:
    marker = raw.get("lab")
    if marker is None and raw.get("lab_text"):
        try:
            marker = json.loads(raw["lab_text"])
        except ValueError:
            marker = {"lab": True}
    if not isinstance(marker, dict) or not marker.get("lab"):
        return None
    return frozenset(_fact_key(str(s)) for s in marker.get("simulated") or [])


#: marker entries (paths, tools, APIs) -> the fact names checks declare they read
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


def _resolved(raw: Any) -> tuple[list[str] | None, str | None]:
    if not isinstance(raw, dict):
        return None, None
    return [str(a) for a in raw.get("addresses") or []], raw.get("error")


def parse_facts(
    host: str, raw: dict[str, Any], *, sent: float | None = None, received: float | None = None
) -> NodeFacts:
    """Typed facts from the probe's JSON (python or sh probe) and the round trip's times."""
    resolve = raw.get("resolve") if isinstance(raw.get("resolve"), dict) else {}
    hostname_addresses, hostname_error = _resolved(resolve.get("hostname"))
    address_resolved, _ = _resolved(resolve.get("address"))
    packages, manager = _packages(raw.get("packages"))
    python = raw.get("python") if isinstance(raw.get("python"), dict) else {}
    probe = raw.get("probe") if isinstance(raw.get("probe"), dict) else {}
    hostname = str(raw.get("hostname") or "").strip() or None
    return NodeFacts(
        host=host,
        probe_kind=str(probe.get("kind", "unknown")),
        probe_errors=[str(e) for e in probe.get("errors") or []],
        hostname=hostname,
        hostname_addresses=hostname_addresses,
        hostname_error=hostname_error,
        address_resolved=address_resolved,
        python_version=python.get("version"),
        clock=_clock(raw.get("clock"), sent, received),
        drm=_drm(raw.get("drm")),
        modules=_modules(raw.get("modules")),
        packages=packages,
        package_manager=manager,
        opencl_icds={str(k): str(v) for k, v in (raw.get("opencl_icds") or {}).items()},
        tools=_tools(raw.get("gpu_tools")),
        oneapi=parse_oneapi(raw.get("oneapi")),
        env=_env(raw.get("env")),
        wheels=_wheels(raw.get("wheels_text")),
        nic=_nic(raw.get("nic")),
        disk=_disk(raw.get("disk")),
        memory=parse_meminfo(raw.get("meminfo")),
        busy=_busy(raw.get("busy")),
        rendezvous=_rendezvous(raw.get("rendezvous")),
        simulated=_simulated(raw),
        model=parse_model(raw.get("model")),
        raw=raw,
        kernel=parse_kernel(raw.get("kernel")),
        fabric=parse_fabric(raw.get("fabric")),
    )
