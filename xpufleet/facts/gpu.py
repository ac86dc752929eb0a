"""GPU facts: the DRM cards in sysfs, the kernel driver module, OpenCL ICD files, the
runtime packages, and the runs of xpu-smi and sycl-ls (parsed by xpusmi.py, sycl.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .devices import INTEL_VENDOR, normalize_pci_id
from .packages import Package, parse_dpkg, parse_rpm
from .registry import Fact, ToolRun, tool_run
from .sycl import SyclListing, parse_sycl_ls
from .xpusmi import XpuSmiDiscovery, XpuSmiVersion, parse_discovery, parse_version


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


def _uevent(text: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


class Drm(Fact[list[DrmCard]]):
    """/sys/class/drm/card<N>: vendor, device id, driver (uevent)."""

    key = "drm"
    python = "drm_cards()"
    sh = r"""printf '['
sep=""
for d in /sys/class/drm/card*; do
  c=${d##*/}
  case "$c" in card*[!0-9]*|card) continue ;; esac
  [ -d "$d" ] || continue
  printf '%s{"card": "%s", "vendor": ' "$sep" "$c"
  head -c 64 "$d/device/vendor" 2>/dev/null | tr -d '\n' | jstr
  printf ', "device": '; head -c 64 "$d/device/device" 2>/dev/null | tr -d '\n' | jstr
  printf ', "uevent": '; jfile "$d/device/uevent"
  printf '}'
  sep=", "
done
printf ']'"""

    @staticmethod
    def parse(raw: Any) -> list[DrmCard]:
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


@dataclass(frozen=True)
class KernelModule:
    name: str
    present: bool
    version: str | None


class KernelModules(Fact[dict[str, KernelModule]]):
    """/sys/module/{i915,xe}: loaded, and the version (modinfo when sysfs has none)."""

    key = "modules"
    python = "kernel_modules()"
    sh = r"""printf '{'
sep=""
for m in i915 xe; do
  present=false; [ -d "/sys/module/$m" ] && present=true
  printf '%s"%s": {"present": %s, "version": ' "$sep" "$m" "$present"
  if [ -r "/sys/module/$m/version" ]; then tr -d '\n' < "/sys/module/$m/version" | jstr
  else printf 'null'; fi
  printf '}'
  sep=", "
done
printf '}'"""

    @staticmethod
    def parse(raw: Any) -> dict[str, KernelModule]:
        out = {}
        for name, item in (raw or {}).items():
            if isinstance(item, dict):
                version = item.get("version") or item.get("modinfo_version")
                out[name] = KernelModule(name, bool(item.get("present")), version)
        return out


class OpenClIcds(Fact[dict[str, str]]):
    """/etc/OpenCL/vendors/*.icd: file name -> the library it names."""

    key = "opencl_icds"
    python = "opencl_icds()"
    sh = r"""printf '{'
sep=""
for f in /etc/OpenCL/vendors/*.icd; do
  [ -f "$f" ] || continue
  printf '%s' "$sep"; printf '%s' "${f##*/}" | jstr; printf ': '; tr -d '\n' < "$f" | jstr
  sep=", "
done
printf '}'"""

    @staticmethod
    def parse(raw: Any) -> dict[str, str]:
        return {str(k): str(v) for k, v in (raw or {}).items()}


class Packages(dict[str, Package]):
    """Installed runtime packages by name, and which package manager told (None: none)."""

    def __init__(self, found: dict[str, Package], manager: str | None) -> None:
        super().__init__(found)
        self.manager = manager


class RuntimePackages(Fact[Packages]):
    """dpkg/rpm's answer about the GPU runtime packages (RUNTIME_PACKAGES)."""

    key = "packages"
    python = "package_queries()"
    background = True
    params = ("packages",)
    sh = r"""printf '{'
if command -v dpkg >/dev/null 2>&1; then printf '"dpkg": '; jrun dpkg -s $P_PACKAGES; fi
printf '}'"""

    @staticmethod
    def parse(raw: Any) -> Packages:
        raw = raw if isinstance(raw, dict) else {}
        dpkg, rpm = tool_run(raw.get("dpkg")), tool_run(raw.get("rpm"))
        found: dict[str, Package] = {}
        manager = None
        if dpkg and not dpkg.missing:
            manager = "dpkg"
            found.update(parse_dpkg(dpkg.out))
        if rpm and not rpm.missing:
            manager = manager or "rpm"
            found.update(parse_rpm(rpm.out))
        return Packages(found, manager)


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


class GpuToolsRuns(Fact[GpuTools]):
    """xpu-smi -v / discovery (-j) and sycl-ls (inside setvars.sh when not on PATH)."""

    key = "gpu_tools"
    attr = "tools"
    python = "gpu_tools(SETVARS)"
    background = True
    params = ("device_hierarchy",)
    sh = r"""printf '{"xpu_smi_version": '; jrun xpu-smi -v
printf ', "xpu_smi_discovery_json": '; jrun xpu-smi discovery -j
printf ', "xpu_smi_discovery": '; jrun xpu-smi discovery
ZE_FLAT_DEVICE_HIERARCHY=$P_DEVICE_HIERARCHY
export ZE_FLAT_DEVICE_HIERARCHY
printf ', "sycl_ls": '; jrun sycl-ls
printf ', "paths": {"xpu-smi": '; command -v xpu-smi | jstr
printf ', "sycl-ls": '; command -v sycl-ls | jstr
printf '}}'"""

    @staticmethod
    def parse(raw: Any) -> GpuTools:
        raw = raw if isinstance(raw, dict) else {}
        paths = raw.get("paths") or {}
        version_run = tool_run(raw.get("xpu_smi_version"))
        json_run = tool_run(raw.get("xpu_smi_discovery_json"))
        table_run = tool_run(raw.get("xpu_smi_discovery"))
        sycl_run = tool_run(raw.get("sycl_ls"))
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
