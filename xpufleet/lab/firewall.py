"""The lab's firewall: `blocked_port` DROP rules, each tagged with the lab and its node
in an iptables comment, so `down` removes exactly this lab's rules and no other's."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from typing import TYPE_CHECKING

from .processes import CLEAN_ENV
from .profile import LabError

if TYPE_CHECKING:
    from .cluster import Lab


def iptables(*args: str, check: bool = True) -> str:
    proc = subprocess.run(
        ["iptables", "-w", "10", *args], capture_output=True, text=True, env=CLEAN_ENV
    )
    if check and proc.returncode != 0:
        raise LabError(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def drop_rule(lab: Lab, index: int, port: int) -> list[str]:
    """A DROP of `port` on the node's addresses: its SSH one and its fabric one."""
    addresses = f"{lab.node_address(index)}/32,{lab.fabric_address(index)}/32"
    return ["INPUT", "-d", addresses, "-p", "tcp", "-m", "tcp", "--dport", str(port),
            "-m", "comment", "--comment", f"{lab.tag}:node{index}", "-j", "DROP"]  # fmt: skip


def block_port(lab: Lab, index: int, port: int) -> None:
    iptables("-I", *drop_rule(lab, index, port))


def remove_rules(lab: Lab, indexes: set[int] | None = None) -> int:
    """Delete this lab's DROP rules (of the given nodes, or all), found by their comment."""
    if shutil.which("iptables", path=CLEAN_ENV["PATH"]) is None:
        return 0
    removed = 0
    for line in iptables("-S").splitlines():
        if not line.startswith("-A ") or f"{lab.tag}:" not in line:
            continue
        words = shlex.split(line)
        comment = words[words.index("--comment") + 1] if "--comment" in words else ""
        node = comment.rsplit(":node", 1)[-1]
        if indexes is not None and not (node.isdigit() and int(node) in indexes):
            continue
        iptables("-D", *words[1:])
        removed += 1
    return removed
