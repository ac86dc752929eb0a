"""The lab's firewall: `blocked_port` and `blocked_egress` DROP rules, each tagged with the
lab and its node in an iptables comment, so `down` removes exactly this lab's rules and no
other's.

- `blocked_port`: INPUT, the port on the node's addresses (nobody reaches it there).
- `blocked_egress`: OUTPUT, the port on any address, for the node's processes only. The
  nodes share one network namespace, and a connection between two loopback addresses
  carries no address of its sender's node (the kernel picks the destination, or
  127.0.0.1, as the source), so the node's processes are told apart by a cgroup: every
  process of the node is moved into its own cgroup v2 group (new ones, started through
  its sshd, inherit it) and iptables' `cgroup --path` match drops their SYNs.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
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


def node_cgroup(lab: Lab, index: int) -> str:
    """Node<index>'s cgroup, relative to the cgroup v2 root (what `--path` matches)."""
    return f"{lab.tag.replace(':', '-')}-node{index}"


def egress_rule(lab: Lab, index: int, port: int) -> list[str]:
    """A DROP of outgoing TCP to `port` (any address) from node<index>'s processes."""
    return ["OUTPUT", "-p", "tcp", "-m", "tcp", "--dport", str(port),
            "-m", "cgroup", "--path", node_cgroup(lab, index),
            "-m", "comment", "--comment", f"{lab.tag}:node{index}", "-j", "DROP"]  # fmt: skip


def cgroup2_root() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on a
    hybrid set-up), from /proc/self/mountinfo; None without one."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            if right.split()[:1] == ["cgroup2"]:
                return Path(left.split()[4])
    return None


def _move(pids: Iterable[int | str], group: Path) -> None:
    for pid in pids:
        if int(pid) <= 0:  # 0 would be the writer itself
            continue
        with contextlib.suppress(OSError):  # gone meanwhile
            (group / "cgroup.procs").write_text(f"{pid}\n")


def join_node_cgroup(lab: Lab, index: int, pids: Iterable[int]) -> None:
    """Processes started for node<index> from outside (its sshd, restarted) join its
    cgroup if it has one, so a `blocked_egress` stays on them."""
    root = cgroup2_root()
    group = root / node_cgroup(lab, index) if root else None
    if group is not None and group.is_dir():
        _move(pids, group)


def block_egress(lab: Lab, index: int, port: int, pids: Iterable[int]) -> None:
    """Put node<index>'s processes (`pids`: all of them) into its cgroup and drop their
    outgoing TCP to `port`."""
    root = cgroup2_root()
    if root is None:
        raise LabError("blocked_egress needs a cgroup v2 hierarchy; none is mounted")
    group = root / node_cgroup(lab, index)
    group.mkdir(exist_ok=True)
    _move(pids, group)
    iptables("-I", *egress_rule(lab, index, port))


def remove_cgroups(lab: Lab, indexes: set[int] | None = None) -> None:
    """Move what is left in the nodes' cgroups back to the root group, then remove them
    (after their rules: a rule holds its cgroup)."""
    root = cgroup2_root()
    if root is None:
        return
    prefix = node_cgroup(lab, 0)[: -len("0")]
    for group in root.glob(f"{prefix}*"):
        node = group.name[len(prefix) :]
        if not node.isdigit() or (indexes is not None and int(node) not in indexes):
            continue
        with contextlib.suppress(OSError):
            _move((group / "cgroup.procs").read_text().split(), root)
            group.rmdir()


def remove_rules(lab: Lab, indexes: set[int] | None = None, chain: str | None = None) -> int:
    """Delete this lab's DROP rules (of the given nodes, or all; of one chain, or both:
    INPUT for `blocked_port`, OUTPUT for `blocked_egress`), found by their comment, and
    the cgroups of the OUTPUT ones."""
    if shutil.which("iptables", path=CLEAN_ENV["PATH"]) is None:
        return 0
    removed = 0
    for line in iptables("-S").splitlines():
        if not line.startswith("-A ") or f"{lab.tag}:" not in line:
            continue
        words = shlex.split(line)
        if chain is not None and words[1] != chain:
            continue
        comment = words[words.index("--comment") + 1] if "--comment" in words else ""
        node = comment.rsplit(":node", 1)[-1]
        if indexes is not None and not (node.isdigit() and int(node) in indexes):
            continue
        iptables("-D", *words[1:])
        removed += 1
    if chain in (None, "OUTPUT"):
        remove_cgroups(lab, indexes)
    return removed
