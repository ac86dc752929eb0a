"""Parsers of `xpu-smi` output: `-v`, `discovery` (tables of 1.x) and `discovery -j`.

Formats differ across xpu-smi versions (fixtures 01, 01b, 03, 03b, 04, 04c). A text
that matches no known layout is reported as format "unknown" so that a check can say
"unknown format" instead of "no GPU".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from .devices import normalize_pci_id

UNKNOWN, EMPTY = "unknown", "empty"


@dataclass(frozen=True)
class XpuSmiVersion:
    format: str
    cli: str | None = None
    service: str | None = None
    level_zero: str | None = None

    @property
    def major(self) -> int | None:
        match = re.match(r"(\d+)\.", self.cli or "")
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class XpuSmiDevice:
    device_id: int
    name: str | None = None
    pci_bdf: str | None = None
    pci_device_id: str | None = None
    uuid: str | None = None
    drm_device: str | None = None
    function_type: str | None = None
    tiles: int | None = None
    memory_mib: float | None = None


@dataclass(frozen=True)
class XpuSmiDiscovery:
    format: str
    devices: list[XpuSmiDevice] = field(default_factory=list)

    @property
    def known(self) -> bool:
        return self.format not in (UNKNOWN,)


_SECTION = re.compile(r"^(?P<section>[\w-]*CLI|Service):\s*$")
_KEY_VALUE = re.compile(r"^\s+(?P<key>[\w ]+?):\s*(?P<value>.*?)\s*$")


def parse_version(text: str) -> XpuSmiVersion:
    """`xpu-smi -v`: 'xpu-smiCLI:'/'CLI:' and 'Service:' sections with 'Version:' lines."""
    section = None
    values: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        header = _SECTION.match(line)
        if header:
            section = "service" if header.group("section") == "Service" else "cli"
            continue
        kv = _KEY_VALUE.match(line)
        if section and kv:
            values[(section, kv.group("key").lower())] = kv.group("value")
    cli = values.get(("cli", "version"))
    if not cli:
        banner = re.search(r"XPU-SMI v(\d+(?:\.\d+)+)", text)
        if banner:
            return XpuSmiVersion("banner", cli=banner.group(1))
        return XpuSmiVersion(EMPTY if not text.strip() else UNKNOWN)
    return XpuSmiVersion(
        "sections",
        cli=cli,
        service=values.get(("service", "version")),
        level_zero=values.get(("service", "level zero version")),
    )


_TABLE_ROW = re.compile(r"^\|\s*(?P<id>\d*)\s*\|\s*(?P<info>.*?)\s*\|\s*$")
_MIB = re.compile(r"([\d.]+)\s*MiB", re.IGNORECASE)


def _device_from_fields(device_id: int, fields: dict[str, str]) -> XpuSmiDevice:
    name = fields.get("device name")
    pci_id = fields.get("pci device id")
    if pci_id is None and name:
        bracket = re.search(r"\[(0x[0-9a-fA-F]+)\]", name)
        pci_id = bracket.group(1) if bracket else None
    tiles = fields.get("number of tiles")
    memory = _MIB.search(fields.get("memory physical size", ""))
    return XpuSmiDevice(
        device_id=device_id,
        name=name,
        pci_bdf=fields.get("pci bdf address"),
        pci_device_id=normalize_pci_id(pci_id),
        uuid=fields.get("soc uuid") or fields.get("uuid"),
        drm_device=fields.get("drm device"),
        function_type=fields.get("function type"),
        tiles=int(tiles) if tiles and tiles.isdigit() else None,
        memory_mib=float(memory.group(1)) if memory else None,
    )


def parse_discovery_text(text: str) -> XpuSmiDiscovery:
    """The boxed `Device ID | Device Information` table of xpu-smi 1.x (and xpumcli)."""
    if not text.strip():
        return XpuSmiDiscovery(EMPTY)
    rows: list[tuple[int, dict[str, str]]] = []
    header_seen = False
    for line in text.splitlines():
        if "Device ID" in line and "Device Information" in line:
            header_seen = True
            continue
        match = _TABLE_ROW.match(line.strip())
        if not match:
            continue
        info = match.group("info")
        if match.group("id"):
            rows.append((int(match.group("id")), {}))
        if rows and ":" in info:
            key, _, value = info.partition(":")
            rows[-1][1][key.strip().lower()] = value.strip()
    if not header_seen:
        return XpuSmiDiscovery(UNKNOWN)
    devices = [_device_from_fields(i, f) for i, f in rows if "device name" in f]
    if rows and not devices:
        return XpuSmiDiscovery(UNKNOWN)
    return XpuSmiDiscovery("table", devices)


def parse_discovery_json(text: str) -> XpuSmiDiscovery:
    """`xpu-smi discovery -j`: {"device_list": [{"device_id", "device_name", ...}]}."""
    if not text.strip():
        return XpuSmiDiscovery(EMPTY)
    try:
        doc = json.loads(text)
    except ValueError:
        return XpuSmiDiscovery(UNKNOWN)
    if not isinstance(doc, dict) or not isinstance(doc.get("device_list"), list):
        return XpuSmiDiscovery(UNKNOWN)
    devices = []
    for index, item in enumerate(doc["device_list"]):
        if not isinstance(item, dict):
            return XpuSmiDiscovery(UNKNOWN)
        fields = {str(k).replace("_", " ").lower(): str(v) for k, v in item.items()}
        if "memory physical size byte" in fields:
            try:
                mib = int(fields["memory physical size byte"]) / (1 << 20)
                fields["memory physical size"] = f"{mib:.2f} MiB"
            except ValueError:
                pass
        raw_id = item.get("device_id", index)
        device_id = int(raw_id) if str(raw_id).isdigit() else index
        devices.append(_device_from_fields(device_id, fields))
    return XpuSmiDiscovery("json", devices)


def parse_discovery(json_text: str | None, table_text: str | None) -> XpuSmiDiscovery:
    """Prefer `-j`; fall back to the table when the JSON is missing or unreadable."""
    if json_text is not None:
        parsed = parse_discovery_json(json_text)
        if parsed.format == "json":
            return parsed
    if table_text is not None:
        parsed_table = parse_discovery_text(table_text)
        if parsed_table.format != EMPTY or json_text is None:
            return parsed_table
    return parse_discovery_json(json_text or "")
