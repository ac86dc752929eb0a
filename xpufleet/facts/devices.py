"""Intel Data Center GPU Max models by PCI device id (REFERENCE §4), and name matching.

Doctor names a card's model from its PCI id first (sysfs, `xpu-smi discovery -j`),
and falls back to the marketing name (`Data Center GPU Max 1550`) only when no id is
known, because names differ across pci.ids and tool versions while ids do not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuModel:
    """What one card of a model offers: its tiles and the memory of the whole card."""

    key: str
    label: str
    tiles: int
    memory_gb: int


MAX1550 = GpuModel("max1550", "Data Center GPU Max 1550", 2, 128)
MAX_2T_96 = GpuModel("max-2t-96gb", "Data Center GPU Max (2 tiles, 96 GB)", 2, 96)
MAX1100 = GpuModel("max1100", "Data Center GPU Max 1100", 1, 48)

#: PVC PCI device ids (lower-case, 4 hex digits) -> model, per REFERENCE §4
PCI_MODELS: dict[str, GpuModel] = {
    "0bd4": MAX1550,
    "0bd5": MAX1550,
    "0bd6": MAX1550,
    "0b69": MAX1550,
    "0bd7": MAX_2T_96,
    "0bd8": MAX_2T_96,
    "0bda": MAX1100,
    "0bdb": MAX1100,
    "0b6e": MAX1100,
}

#: models named by the inventory's `gpu_model` (choices of xpufleet.variables)
MODELS_BY_KEY: dict[str, GpuModel] = {
    "max1550": MAX1550,
    "max1450": GpuModel("max1450", "Data Center GPU Max 1450", 2, 128),
    "max1100": MAX1100,
}

INTEL_VENDOR = "8086"

_NAME = re.compile(r"Data Center GPU Max (\d{4})", re.IGNORECASE)


def normalize_pci_id(value: str | int | None) -> str | None:
    """'0x0BD5', '0xbd5', 'bd5', 3029 -> '0bd5'; None for anything unreadable."""
    if value is None:
        return None
    if isinstance(value, int):
        return f"{value:04x}"
    text = value.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if not text or not re.fullmatch(r"[0-9a-f]{1,4}", text):
        return None
    return text.rjust(4, "0")


def model_from_pci_id(pci_id: str | int | None) -> GpuModel | None:
    key = normalize_pci_id(pci_id)
    return PCI_MODELS.get(key) if key else None


def model_key_from_name(name: str | None) -> str | None:
    """'Intel(R) Data Center GPU Max 1550' -> 'max1550'; None when the name says no model."""
    if not name:
        return None
    match = _NAME.search(name)
    return f"max{match.group(1)}" if match else None
