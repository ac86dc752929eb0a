"""Parsers of small system facts: /proc/meminfo, `ip` address output, the oneAPI layout."""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any

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
