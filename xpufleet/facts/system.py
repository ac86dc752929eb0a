"""Parsers of small system facts: /proc/meminfo, `ip` address output, the oneAPI layout."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

from .registry import Fact
from .versions import version_tuple


@dataclass(frozen=True)
class Memory:
    total_kb: int
    available_kb: int


def parse_meminfo(text: str | None) -> Memory | None:
    if not text:
        return None
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"^(\w+):\s+(\d+)", line)
        if match:
            values[match.group(1)] = int(match.group(2))
    if "MemTotal" not in values:
        return None
    available = values.get("MemAvailable", values.get("MemFree", 0))
    return Memory(values["MemTotal"], available)


@dataclass(frozen=True)
class InterfaceAddress:
    address: str
    prefix: int

    def carries(self, address: str, *, loopback_interface: bool) -> bool:
        """The interface answers for `address`: exact match, or (on lo) inside its subnet."""
        try:
            wanted = ipaddress.ip_address(address)
            network = ipaddress.ip_interface(f"{self.address}/{self.prefix}").network
        except ValueError:
            return False
        if wanted == ipaddress.ip_address(self.address):
            return True
        return loopback_interface and wanted in network

    def same_subnet(self, address: str) -> bool:
        """`address` lies in this interface address's subnet (reachable without a router)."""
        try:
            return (
                ipaddress.ip_address(address)
                in ipaddress.ip_interface(f"{self.address}/{self.prefix}").network
            )
        except ValueError:
            return False


def parse_ip_json(text: str) -> list[InterfaceAddress]:
    """`ip -j addr show dev NIC`."""
    out: list[InterfaceAddress] = []
    try:
        doc = json.loads(text)
    except ValueError:
        return out
    for link in doc if isinstance(doc, list) else []:
        for info in link.get("addr_info", []) if isinstance(link, dict) else []:
            if "local" in info:
                out.append(InterfaceAddress(str(info["local"]), int(info.get("prefixlen", 32))))
    return out


def parse_ip_text(text: str) -> list[InterfaceAddress]:
    """`ip -o addr show dev NIC`: '1: lo    inet 127.0.0.1/8 scope host lo'."""
    out: list[InterfaceAddress] = []
    for match in re.finditer(r"\binet6?\s+([0-9a-fA-F.:]+)/(\d+)", text):
        out.append(InterfaceAddress(match.group(1), int(match.group(2))))
    return out


@dataclass(frozen=True)
class OneApi:
    root: str
    exists: bool
    setvars: bool
    #: release of the toolkit (e.g. '2025.0'), from the unified layout or compiler/latest
    version: str | None
    version_source: str | None
    ccl_version: str | None
    components: dict[str, str | None] = field(default_factory=dict)


def _latest(component: dict[str, Any]) -> str | None:
    link = component.get("latest")
    if link and component.get("latest_exists", True):
        return str(link).rstrip("/").rsplit("/", 1)[-1]
    versions = [v for v in component.get("versions", []) if version_tuple(v)]
    return max(versions, key=lambda v: version_tuple(v) or ()) if versions else None


def parse_oneapi(layout: dict[str, Any] | None) -> OneApi | None:
    """The oneAPI root as listed: setvars.sh, `<comp>/latest`, `<ver>/oneapi-vars.sh`."""
    if not layout:
        return None
    components = {
        name: _latest(item)
        for name, item in (layout.get("components") or {}).items()
        if isinstance(item, dict)
    }
    unified = [v for v, has_vars in (layout.get("unified") or {}).items() if has_vars]
    unified = [v for v in unified if version_tuple(v)]
    version, source = None, None
    if unified:
        version = max(unified, key=lambda v: version_tuple(v) or ())
        source = f"{layout.get('root')}/{version}/oneapi-vars.sh"
    elif components.get("compiler"):
        version = components["compiler"]
        source = f"{layout.get('root')}/compiler/latest"
    return OneApi(
        root=str(layout.get("root")),
        exists=bool(layout.get("exists")),
        setvars=bool(layout.get("setvars")),
        version=version,
        version_source=source,
        ccl_version=components.get("ccl"),
        components=components,
    )


class Meminfo(Fact["Memory | None"]):
    """/proc/meminfo (total and available memory)."""

    key = "meminfo"
    attr = "memory"
    python = 'read("/proc/meminfo")'
    sh = "jfile /proc/meminfo"
    parse = staticmethod(parse_meminfo)


class OneApiLayout(Fact["OneApi | None"]):
    """The oneAPI tree at oneapi_root: setvars.sh, components and their `latest`."""

    key = "oneapi"
    python = "oneapi_layout(ROOT)"
    params = ("oneapi_root",)
    sh = r"""printf '{"root": '; printf '%s' "$P_ONEAPI_ROOT" | jstr
if [ -d "$P_ONEAPI_ROOT" ]; then
  sv=false; [ -f "$P_ONEAPI_ROOT/setvars.sh" ] && sv=true
  printf ', "exists": true, "setvars": %s' "$sv"
  printf ', "components": {'
  sep=""
  for comp in "$P_ONEAPI_ROOT"/*; do
    [ -d "$comp" ] || continue
    name=${comp##*/}
    case "$name" in [0-9]*) continue ;; esac
    printf '%s' "$sep"; printf '%s' "$name" | jstr
    printf ': {"latest": '
    if [ -L "$comp/latest" ]; then readlink "$comp/latest" | tr -d '\n' | jstr
    else printf 'null'; fi
    le=false; [ -d "$comp/latest" ] && le=true
    printf ', "latest_exists": %s, "versions": [' "$le"
    vsep=""
    for v in "$comp"/[0-9]*; do
      [ -d "$v" ] || continue
      printf '%s' "$vsep"; printf '%s' "${v##*/}" | jstr; vsep=", "
    done
    printf ']}'
    sep=", "
  done
  printf '}, "unified": {'
  sep=""
  for v in "$P_ONEAPI_ROOT"/[0-9]*; do
    [ -d "$v" ] || continue
    printf '%s' "$sep"; printf '%s' "${v##*/}" | jstr
    printf ': %s' "$( [ -f "$v/oneapi-vars.sh" ] && echo true || echo false )"
    sep=", "
  done
  printf '}}'
else
  printf ', "exists": false, "setvars": false, "components": {}}'
fi"""
    parse = staticmethod(parse_oneapi)


@dataclass(frozen=True)
class Disk:
    path: str
    checked: str
    free_bytes: int | None
    total_bytes: int | None
    error: str | None = None


class DiskSpace(Fact["Disk | None"]):
    """Free space of the file system that holds (or would hold) model_path."""

    key = "disk"
    python = 'disk_facts(PARAMS.get("model_path"))'
    params = ("model_path",)
    sh = r"""if [ -n "$P_MODEL_PATH" ]; then
  p=$P_MODEL_PATH
  while [ ! -e "$p" ] && [ "$p" != "/" ] && [ -n "$p" ]; do p=$(dirname -- "$p"); done
  set -- $(df -Pk -- "$p" 2>/dev/null | awk 'NR == 2 { print $2, $4 }')
  printf '{"path": '; printf '%s' "$P_MODEL_PATH" | jstr
  printf ', "checked": '; printf '%s' "$p" | jstr
  if [ -n "$2" ]; then printf ', "total": %s, "free": %s}' "$(($1 * 1024))" "$(($2 * 1024))"
  else printf ', "error": "df failed"}'; fi
else
  printf 'null'
fi"""

    @staticmethod
    def parse(raw: Any) -> Disk | None:
        if not isinstance(raw, dict):
            return None
        return Disk(
            path=str(raw.get("path")),
            checked=str(raw.get("checked")),
            free_bytes=raw.get("free"),
            total_bytes=raw.get("total"),
            error=raw.get("error"),
        )
