"""How many devices a model needs and where ranks meet: the arithmetic the planner
(launch) and doctor's checks share, over inventory variables only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import PlanError
from .host import Host

#: share of a device's memory the weights may take when mem_fraction_static is unset
#: (SGLang keeps the rest for the KV cache and activations)
DEFAULT_USABLE_FRACTION = 0.9


@dataclass(frozen=True)
class ModelFit:
    """Does a model's weights fit in the planned devices? One arithmetic, shared with doctor."""

    model_size_gb: float
    devices: int
    device_memory_gb: float
    usable_fraction: float
    capacity_gb: float
    fits: bool
    min_devices: int

    @property
    def message(self) -> str:
        verdict = "fits" if self.fits else "does not fit"
        text = (
            f"model ({self.model_size_gb:g} GB) {verdict} in {self.devices} device(s) x "
            f"{self.device_memory_gb:g} GB x {self.usable_fraction:.2f} usable = "
            f"{self.capacity_gb:.1f} GB"
        )
        if not self.fits:
            text += f"; it needs at least {self.min_devices} devices"
        return text


def model_fit(
    model_size_gb: float,
    devices: int,
    device_memory_gb: float,
    usable_fraction: float = DEFAULT_USABLE_FRACTION,
) -> ModelFit:
    """Weights split over `devices` must fit in each device's usable memory."""
    per_device = device_memory_gb * usable_fraction
    capacity = devices * per_device
    min_devices = max(1, math.ceil(model_size_gb / per_device)) if per_device > 0 else 0
    return ModelFit(
        model_size_gb=float(model_size_gb),
        devices=devices,
        device_memory_gb=float(device_memory_gb),
        usable_fraction=float(usable_fraction),
        capacity_gb=capacity,
        fits=per_device > 0 and model_size_gb <= capacity,
        min_devices=min_devices,
    )


def devices_per_node(host: Host) -> int:
    """Devices the node exposes: tiles in FLAT mode, cards in COMPOSITE mode."""
    if host.var.device_hierarchy == "COMPOSITE":
        return host.var.cards
    return host.var.tiles


def card_of(host: Host, physical_device: int) -> int:
    """The card (xpu-smi's device id, what `xpu-smi ps` reports per process) holding a
    device of the node: the device itself in COMPOSITE mode, tile // tiles-per-card in
    FLAT mode (Level Zero lists the tiles card by card)."""
    if host.var.device_hierarchy == "COMPOSITE":
        return physical_device
    per_card = max(1, host.var.tiles // max(1, host.var.cards))
    return physical_device // per_card


def usable_devices(host: Host) -> int:
    """Devices launch may use on the node: `device_ids` if set, else all of them."""
    return len(host.var.device_ids) or devices_per_node(host)


def rendezvous_address(node0: Host) -> str:
    """Where ranks rendezvous: node 0's `rendezvous_address`, else its inventory address."""
    return node0.var.rendezvous_address or node0.address


def device_memory_gb(host: Host) -> float:
    """Memory of one device: a tile, or in COMPOSITE mode a card (all its tiles)."""
    tile = host.var.tile_memory_gb
    if host.var.device_hierarchy == "COMPOSITE":
        cards = max(1, host.var.cards)
        return tile * max(1, host.var.tiles // cards)
    return tile


def usable_fraction(host: Host) -> float:
    fraction = host.var.mem_fraction_static
    return float(fraction) if fraction else DEFAULT_USABLE_FRACTION


def default_nnodes(tp: int, hosts: Sequence[Host]) -> int:
    """As few nodes as the ranks need: the smallest n dividing tp whose first n hosts
    each have at least tp/n devices."""
    for n in range(1, len(hosts) + 1):
        if tp % n == 0 and all(usable_devices(h) >= tp // n for h in hosts[:n]):
            return n
    total = sum(devices_per_node(h) for h in hosts)
    raise PlanError(
        f"not enough nodes: --tp {tp} needs {tp} devices but the {len(hosts)} selected "
        f"host(s) expose {total} in total (or no node count divides {tp} evenly)",
        key="--tp",
    )
