"""Network facts: what the hostname and the inventory address resolve to on the node,
the inventory's nic and its addresses, and TCP connects to the peers' rendezvous ports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .registry import Fact
from .system import InterfaceAddress, parse_ip_json, parse_ip_text


@dataclass(frozen=True)
class Resolution:
    #: what the node's hostname resolves to on the node (None: not resolved, sh probe)
    hostname_addresses: list[str] | None = None
    hostname_error: str | None = None
    #: what the inventory address resolves to on the node (None: not resolved)
    address: list[str] | None = None


def _resolved(raw: Any) -> tuple[list[str] | None, str | None]:
    if not isinstance(raw, dict):
        return None, None
    return [str(a) for a in raw.get("addresses") or []], raw.get("error")


class Resolve(Fact[Resolution]):
    """getaddrinfo of the hostname and of the inventory address, on the node."""

    key = "resolve"
    python = (
        '{"hostname": resolve(socket.gethostname()), "address": resolve(PARAMS.get("address"))}'
    )

    @staticmethod
    def parse(raw: Any) -> Resolution:
        raw = raw if isinstance(raw, dict) else {}
        addresses, error = _resolved(raw.get("hostname"))
        address, _ = _resolved(raw.get("address"))
        return Resolution(addresses, error, address)


@dataclass(frozen=True)
class Nic:
    name: str
    exists: bool
    addresses: list[InterfaceAddress]


class NicAddresses(Fact["Nic | None"]):
    """The inventory's nic: exists, and its addresses (`ip -j`, `ip -o` or ioctl)."""

    key = "nic"
    python = 'nic_facts(PARAMS.get("nic"))'
    params = ("nic",)
    sh = r"""if [ -n "$P_NIC" ]; then
  printf '{"name": '; printf '%s' "$P_NIC" | jstr
  printf ', "exists": %s' "$( [ -e "/sys/class/net/$P_NIC" ] && echo true || echo false )"
  printf ', "ip_text": '; ip -o addr show dev "$P_NIC" 2>/dev/null | jstr
  printf '}'
else
  printf 'null'
fi"""

    @staticmethod
    def parse(raw: Any) -> Nic | None:
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


@dataclass(frozen=True)
class Rendezvous:
    """This node's TCP connect to one peer's rendezvous port."""

    host: str
    address: str
    port: int
    result: str
    detail: str


class RendezvousConnects(Fact["dict[str, Rendezvous] | None"]):
    """peer host -> outcome of connecting to its rendezvous port (None: not tested)."""

    key = "rendezvous"
    python = 'rendezvous_facts(PARAMS.get("rendezvous"))'
    background = True

    @staticmethod
    def parse(raw: Any) -> dict[str, Rendezvous] | None:
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
