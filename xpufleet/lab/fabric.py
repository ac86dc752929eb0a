"""The lab's split network: a fabric NIC per node (a veth pair: `dummy` is not available
on these kernels, REFERENCE §9) carrying the node's fabric address; names and addresses
come from the Lab (`fabric_nic`, `fabric_address`), derived from its net."""

from __future__ import annotations

import subprocess
from collections.abc import Collection
from typing import TYPE_CHECKING

from .processes import CLEAN_ENV
from .profile import LabError

if TYPE_CHECKING:
    from .cluster import Lab


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, env=CLEAN_ENV)
    if check and proc.returncode != 0:
        raise LabError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def nics(lab: Lab) -> dict[int, str]:
    """This lab's fabric interfaces that exist now: {node index: name}."""
    prefix = lab.fabric_nic(0)[:-1]
    found = {}
    for line in ip("-o", "link", "show", check=False).stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0] if ":" in line else ""
        rest = name[len(prefix) :]
        if name.startswith(prefix) and rest.isdigit():
            found[int(rest)] = name
    return found


def up(lab: Lab, count: int, *, shared: Collection[int] = ()) -> None:
    """Node i gets `fabric_nic(i)` carrying `fabric_address(i)/24`; extra ones go, except
    `shared` ones (used by another lab on the net: NIC names derive from the net)."""
    existing = nics(lab)
    for index, name in existing.items():
        if index > count and index not in shared:
            ip("link", "del", name, check=False)
    for index in range(1, count + 1):
        name = lab.fabric_nic(index)
        if index not in existing:
            ip("link", "add", name, "type", "veth", "peer", "name", "hsp" + name[3:])
        ip("link", "set", name, "up")
        ip("link", "set", "hsp" + name[3:], "up")
        wanted = f"{lab.fabric_address(index)}/24"
        if wanted not in ip("-o", "addr", "show", "dev", name).stdout:
            ip("addr", "add", wanted, "dev", name, "noprefixroute")


def down(lab: Lab, *, shared: Collection[int] = ()) -> int:
    """Remove the net's fabric NICs but the `shared` ones; returns how many went."""
    found = {i: name for i, name in nics(lab).items() if i not in shared}
    for name in found.values():
        ip("link", "del", name, check=False)  # takes its peer with it
    return len(found)
