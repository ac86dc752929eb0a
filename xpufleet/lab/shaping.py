"""Bandwidth caps for the lab: every node's sending rate, and the control node's, capped
with `tc` htb on lo, so the star/relay difference is measurable on one machine.

A qdisc on lo is machine-wide (every loopback user), so: off by default, on only around
a benchmark (`with caps(lab, rate): ...`, removed on the way out, and by `lab.down`),
and scoped to THIS lab: a class per node matches only `src <net>.<i>/32` (the relay
binds its node's address), the control node's class only `src 127.0.0.1 dst <net>.0/24`,
all filters at one priority derived from the lab's net, so other labs on 127.0.x.* are
untouched. Unclassified traffic is not shaped (htb `default 0`).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Protocol

DEVICE = "lo"
ROOT = "1:"


class _Lab(Protocol):
    net: str

    def node_address(self, index: int) -> str: ...


def _tc(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["tc", *argv], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"tc {' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc


def _octet(lab: _Lab) -> int:
    return int(lab.net.rsplit(".", 1)[1])


def _prio(lab: _Lab) -> int:
    return 100 + _octet(lab)


def _classid(lab: _Lab, index: int) -> str:
    """1:<octet><index> in hex: unique per lab (node 0 = the control node)."""
    return f"1:{_octet(lab):02x}{index:02x}"


def apply(lab: _Lab, nodes: int, rate_mbit: float) -> None:
    """Cap the control node and nodes 1..nodes of this lab at `rate_mbit` each."""
    remove(lab, nodes)
    if "htb 1:" not in _tc("qdisc", "show", "dev", DEVICE).stdout:
        _tc("qdisc", "add", "dev", DEVICE, "root", "handle", ROOT, "htb", "default", "0")
    rate = f"{rate_mbit}mbit"
    prio = str(_prio(lab))
    for index in range(0, nodes + 1):
        classid = _classid(lab, index)
        _tc("class", "add", "dev", DEVICE, "parent", ROOT, "classid", classid, "htb",
            "rate", rate, "ceil", rate, "burst", "256k", "cburst", "256k")  # fmt: skip
        if index == 0:
            match = ["match", "ip", "src", "127.0.0.1/32", "match", "ip", "dst", f"{lab.net}.0/24"]
        else:
            match = ["match", "ip", "src", f"{lab.node_address(index)}/32"]
        _tc("filter", "add", "dev", DEVICE, "parent", ROOT, "protocol", "ip", "prio", prio,
            "u32", *match, "flowid", classid)  # fmt: skip


def remove(lab: _Lab, nodes: int = 255) -> None:
    """Remove this lab's filters and classes; the root qdisc when nobody else uses it."""
    if "htb 1:" not in _tc("qdisc", "show", "dev", DEVICE, check=False).stdout:
        return
    _tc("filter", "del", "dev", DEVICE, "parent", ROOT, "prio", str(_prio(lab)), check=False)
    existing = _tc("class", "show", "dev", DEVICE, check=False).stdout
    for index in range(0, nodes + 1):
        classid = _classid(lab, index)
        if f"class htb {classid} " in existing:
            _tc("class", "del", "dev", DEVICE, "classid", classid, check=False)
    if not _tc("class", "show", "dev", DEVICE, check=False).stdout.strip():
        _tc("qdisc", "del", "dev", DEVICE, "root", check=False)


def net_hex(lab: _Lab) -> str:
    """The lab's net as u32 matches show it: 127.0.9 -> `7f0009`."""
    return "".join(f"{int(part):02x}" for part in lab.net.split("."))


def present(lab: _Lab) -> bool:
    """Whether filters of this lab's net are on lo (caps a killed benchmark left)."""
    shown = _tc("filter", "show", "dev", DEVICE, "parent", ROOT, "prio", str(_prio(lab)),
                check=False).stdout  # fmt: skip
    return f"match {net_hex(lab)}" in shown


@contextlib.contextmanager
def caps(lab: _Lab, nodes: int, rate_mbit: float) -> Iterator[None]:
    """Caps on for the block, always removed after it (also on errors and Ctrl-C)."""
    try:
        apply(lab, nodes, rate_mbit)
        yield
    finally:
        remove(lab, nodes)


__all__ = ["apply", "caps", "remove"]
