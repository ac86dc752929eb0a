"""Python facts: the node's python3, launch's environment (packages, torch and its XPU
answers, the import check of facts/remote/imports.py) and the installed-wheels state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..nodestate import InstalledWheel, parse_node_state
from ..nodestate import normalize as normalize_name
from .registry import Fact


class PythonVersion(Fact["str | None"]):
    """The node's python3 (the one that ran the probe; None: the sh fallback ran)."""

    key = "python"
    attr = "python_version"
    python = "python_info()"
    sh = "printf 'null'"

    @staticmethod
    def parse(raw: Any) -> str | None:
        return raw.get("version") if isinstance(raw, dict) else None


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
    #: xpufleet/facts/remote/imports.py's result: {"ok": [...], "failed": {...} | None}
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


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


class Env(Fact[PythonEnv]):
    """Launch's environment at `venv`: its python, packages, torch (XPU, xccl), imports."""

    key = "env"
    python = 'python_env(PARAMS.get("venv"), SETVARS)'
    background = True
    params = ("venv",)
    sh = r"""printf '{"venv": '; printf '%s' "$P_VENV" | jstr
there=false; [ -d "$P_VENV" ] && there=true
printf ', "exists": %s, "present": false, "error": "python3 missing: the probe ran in POSIX sh"}' \
  "$there"
"""

    @staticmethod
    def parse(raw: Any) -> PythonEnv:
        raw = raw if isinstance(raw, dict) else {}
        if raw.get("probe_error"):
            raw = {"present": True, "error": f"the probe could not run it: {raw['probe_error']}"}
        result = raw.get("result") if isinstance(raw.get("result"), dict) else None
        found = result or {}
        packages = {
            normalize_name(str(k)): str(v) for k, v in (found.get("packages") or {}).items()
        }
        error = None
        if raw.get("present") and result is None:
            error = str(raw.get("error") or "the environment's python printed nothing")
        elif not raw.get("present") and raw.get("error"):
            error = str(raw["error"])
        return PythonEnv(
            venv=raw.get("venv"),
            present=bool(raw.get("present")),
            python_version=found.get("python"),
            packages=packages,
            torch=_torch(found.get("torch")),
            torch_error=found.get("torch_error"),
            sqlite=found.get("sqlite"),
            error=error,
            imports=_dict_or_none(found.get("imports")),
            triton=_dict_or_none(found.get("triton")),
            imports_error=found.get("imports_error"),
        )


class Wheels(Fact["dict[str, InstalledWheel] | None"]):
    """The node's installed-wheels state (provision writes it; None: absent)."""

    key = "wheels_text"
    attr = "wheels"
    python = 'read(PARAMS["wheels_manifest"]) if PARAMS.get("wheels_manifest") else None'
    params = ("wheels_manifest",)
    sh = r"""if [ -n "$P_WHEELS_MANIFEST" ]; then jfile "$P_WHEELS_MANIFEST"
else printf 'null'; fi"""

    @staticmethod
    def parse(raw: Any) -> dict[str, InstalledWheel] | None:
        return parse_node_state(raw) if isinstance(raw, str) else None
