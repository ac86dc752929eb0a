"""A lab killed without its teardown (a pytest run SIGKILLed, a clone deleted with its lab
up): what it leaves, and `Lab.up` removing it before the next lab on the same net starts.

Left by a killed lab (nodes and bastion are daemons in sessions of their own, so they
outlive the process that started them):
* its node processes (holder `xpufleet-lab:<dir>:node<i>`, sshd, whatever ran in the
  node), its Slurm's daemons and its bastion's sshd, still listening on the net's
  addresses at its port: the next lab on the same net and port cannot bind them
  ("Address already in use": lab.up failed after 30 s);
* what is named after the net and shared by every lab on it: the fabric NICs
  `hsn<X>-<Y>-<i>` (fabric.py), the accounts `xpflab<X>-<Y>-*`, their group, sudoers
  file and homes (bastion.py), tc caps on lo (shaping.py);
* iptables rules on the net's addresses tagged with the killed lab's directory (another
  lab's `down` never removes them): the bastion's REJECT names the group's gid.

What counts as a leftover, so that nothing of another net and nothing the lab did not
make is touched:
* processes: only a lab's (a node, found by its holder's name; an sshd run from a
  `<dir>/bastion/sshd_config`), only of another lab directory (or of this one, not in its
  state), and only when it listens on this lab's addresses at this lab's port, or its
  state file says this net and port. A lab whose directory still holds its state is
  not a leftover but a lab someone may use: `up` refuses, naming it, at once (it failed
  after 30 s before);
* NICs, accounts, rules, tc filters: only names and addresses derived from this net, and
  only when this lab starts afresh (none of its nodes kept) and no other lab runs on the
  net: labs on one net with ports of their own (the lifecycle tests' labs) share them.

The other way round, `Lab.down` keeps the net's NICs and accounts while another lab runs
on the net: a second lab's down used to remove them under the running one (doctor's
net.nic failed on every node, bastion logins failed, until the next lab.up/bastion_up).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import bastion, fabric, firewall, shaping
from .processes import CLEAN_ENV, kill_all, kill_nodes, ns_inode
from .profile import LabError
from .slurm import LabSlurm

if TYPE_CHECKING:
    from .cluster import Lab

_HOLDER = re.compile(rb"^xpufleet-lab:(/.*):node(\d+)$")


# -- what the machine shows, read into plain data -----------------------------------------
def parse_holder(argv0: bytes) -> tuple[str, int] | None:
    """(lab dir, node index) of a node holder's argv[0] (processes.holder_name)."""
    match = _HOLDER.match(argv0)
    return (match.group(1).decode(errors="replace"), int(match.group(2))) if match else None


def parse_listening(text: str) -> dict[str, tuple[str, int]]:
    """/proc/net/tcp: socket inode -> (IPv4 address, port) of every listening socket."""
    found = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 10 or parts[3] != "0A":
            continue
        address, port = parts[1].split(":")
        ip = ".".join(str(b) for b in reversed(bytes.fromhex(address)))
        found[parts[9]] = (ip, int(port, 16))
    return found


def _cmdline(pid: int | str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _listening_of(pids: list[int], sockets: dict[str, tuple[str, int]]) -> set[tuple[str, int]]:
    found = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(fd.path)
                    if link.startswith("socket:[") and link[8:-1] in sockets:
                        found.add(sockets[link[8:-1]])
    return found


def _state(directory: str) -> dict[str, object]:
    try:
        return json.loads((Path(directory) / "state.json").read_text())
    except (OSError, ValueError):
        return {}


# -- what belongs to this lab's net (pure) -------------------------------------------------
def nets(lab: Lab) -> tuple[str, ...]:
    """The address prefixes this lab's sshds listen on: its net and the bastion's one."""
    private = bastion.private_net(lab.net) if int(lab.net.split(".")[1]) < 128 else None
    return (lab.net, private) if private else (lab.net,)


def on_net(lab: Lab, address: str) -> bool:
    return address.rsplit(".", 1)[0] in nets(lab)


@dataclass
class OtherLab:
    """Another lab directory's running nodes, seen from this lab."""

    dir: str
    nodes: dict[int, list[int]]
    state: dict[str, object] = field(default_factory=dict)
    listening: set[tuple[str, int]] = field(default_factory=set)

    def on_net(self, lab: Lab) -> bool:
        """Whether it runs on this lab's net (any port)."""
        return self.state.get("net") == lab.net or any(on_net(lab, a) for a, _ in self.listening)

    @property
    def intact(self) -> bool:
        """Whether its directory still describes it: a state file naming a running holder
        (a lab someone may be using, not the remains of one whose clone is gone)."""
        nodes = self.state.get("nodes")
        if not isinstance(nodes, dict):
            return False
        return any(
            isinstance(entry, dict) and entry.get("holder") in self.nodes.get(int(key), [])
            for key, entry in nodes.items()
            if str(key).isdigit()
        )

    def collides(self, lab: Lab) -> bool:
        """Whether it holds (or would hold) this lab's addresses at this lab's port."""
        if (self.state.get("net"), self.state.get("port")) == (lab.net, lab.port):
            return True
        return any(on_net(lab, a) and p == lab.port for a, p in self.listening)


def own_nic(lab: Lab, name: str) -> bool:
    """A fabric NIC of this lab's net (`hsn<X>-<Y>-<i>`) or its veth peer (`hsp...`)."""
    prefix = lab.fabric_nic(0)[3:-1]  # "<X>-<Y>-"
    return (
        name[:3] in ("hsn", "hsp")
        and name[3:].startswith(prefix)
        and (name[3 + len(prefix) :].isdigit())
    )


def _rule_addresses(words: list[str]) -> list[str]:
    """The destination addresses of an `iptables -S` rule (-d lists, --dst-range ends)."""
    found = []
    for flag in ("-d", "--dst-range"):
        if flag in words:
            value = words[words.index(flag) + 1]
            found += [part.split("/")[0] for part in re.split(r"[,-]", value) if "." in part]
    return found


def lab_rule(lab: Lab, line: str) -> bool:
    """An `iptables -S` rule a lab made (tagged `xpufleet-lab:`) on this net's addresses:
    the bastion's REJECT (private range), a `blocked_port` DROP (node and fabric
    addresses); whichever lab directory's tag it carries."""
    if not line.startswith("-A "):
        return False
    words = shlex.split(line)
    comment = words[words.index("--comment") + 1] if "--comment" in words else ""
    if not comment.startswith("xpufleet-lab:"):
        return False
    fabric_net = lab.fabric_net if int(lab.net.split(".")[1]) < 64 else None
    prefixes = {*nets(lab), fabric_net} - {None}
    addresses = _rule_addresses(words)
    return bool(addresses) and all(a.rsplit(".", 1)[0] in prefixes for a in addresses)


# -- finding and removing -----------------------------------------------------------------
def _sockets() -> dict[str, tuple[str, int]]:
    try:
        return parse_listening(Path("/proc/net/tcp").read_text())
    except OSError:
        return {}


def other_labs(lab: Lab) -> list[OtherLab]:
    """Every other lab directory with a node running on this machine (found by its
    holders' names, so also when that directory is gone)."""
    holders: dict[int, tuple[str, int]] = {}
    spaces: dict[int, list[int]] = {}  # mount namespace -> pids: ONE pass over /proc
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = parse_holder(_cmdline(entry.name).split(b"\0", 1)[0])
            if found and Path(found[0]) != lab.dir:
                holders[int(entry.name)] = found
            inode = ns_inode(entry.name)
            if inode is not None:
                spaces.setdefault(inode, []).append(int(entry.name))
    if not holders:
        return []
    by_dir: dict[str, dict[int, list[int]]] = {}
    for pid, (directory, index) in holders.items():
        space = ns_inode(pid)
        pids = spaces.get(space, [pid]) if space is not None else [pid]
        by_dir.setdefault(directory, {})[index] = pids
    sockets = _sockets()
    return [
        OtherLab(
            directory,
            nodes,
            _state(directory),
            _listening_of([pid for pids in nodes.values() for pid in pids], sockets),
        )
        for directory, nodes in sorted(by_dir.items())
    ]


def shared_nics(lab: Lab, others: list[OtherLab]) -> set[int]:
    """Fabric NICs (by node index) that another lab running on this net uses (one that
    collides with this lab is not running any more once `remove` is through)."""
    return {i for o in others if o.on_net(lab) and not o.collides(lab) for i in o.nodes}


def stray_bastions(lab: Lab) -> list[int]:
    """Bastion sshds (run from a `<dir>/bastion/sshd_config`) listening on this lab's
    bastion address and port, other than this lab's own running one."""
    try:
        wanted = (bastion.bastion_address(lab), lab.port)
    except ValueError:
        return []
    own = bastion.running_pid(lab)
    sockets = {inode: a for inode, a in _sockets().items() if a == wanted}
    if not sockets:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != own:
            if b"/bastion/sshd_config" in _cmdline(entry.name):
                if _listening_of([int(entry.name)], sockets):
                    found.append(int(entry.name))
    return found


def remove(lab: Lab, others: list[OtherLab], *, fresh: bool) -> list[str]:
    """Remove what killed labs left on this lab's net and port (see the module's rules);
    `others`: other_labs(lab); `fresh`: this lab keeps none of its nodes. Returns what was
    removed, one line each."""
    removed = []
    busy = [other.dir for other in others if other.collides(lab) and other.intact]
    if busy:
        raise LabError(
            f"another lab runs on {lab.net}.x port {lab.port} (its directory {busy[0]} is "
            f"still there): bring it down (XPUFLEET_LAB_DIR={busy[0]} invoke lab.down) or "
            "give this lab another net or port (XPUFLEET_LAB_NET / XPUFLEET_LAB_PORT)"
        )
    for other in others:
        if other.collides(lab):
            # its Slurm too (slurmctld on <net>.254, found by its conf path like down does)
            killed = LabSlurm(type(lab)(other.dir, lab.net, lab.port)).down()
            killed += kill_nodes(Path(other.dir))
            nodes = ", ".join(f"node{i}" for i in sorted(other.nodes))
            removed.append(f"{killed} processes of {nodes} of the lab in {other.dir}")
    strays = stray_bastions(lab)
    if strays:
        kill_all(strays, signal.SIGKILL)
        removed.append(f"bastion sshd on {bastion.bastion_address(lab)}:{lab.port} "
                       f"(pid {', '.join(map(str, strays))})")  # fmt: skip
    if not fresh or any(o.on_net(lab) for o in others if not o.collides(lab)):
        return removed
    links = fabric.ip("-o", "link", "show", check=False).stdout.splitlines()
    names = [line.split(":", 2)[1].strip().split("@", 1)[0] for line in links if ":" in line]
    nics = sorted(name for name in names if own_nic(lab, name))
    for name in nics:  # a veth's peer goes with it
        fabric.ip("link", "del", name, check=False)
    if nics:
        removed.append(f"fabric NICs {', '.join(n for n in nics if n.startswith('hsn'))}")
    has_iptables = shutil.which("iptables", path=CLEAN_ENV["PATH"]) is not None
    for line in firewall.iptables("-S", check=False).splitlines() if has_iptables else ():
        if lab_rule(lab, line):
            firewall.iptables("-D", *shlex.split(line)[1:], check=False)
            removed.append(f"iptables rule {line}")
    accounts = bastion.remove_accounts(lab)
    if accounts:
        removed.append(f"accounts {', '.join(accounts)}")
    with contextlib.suppress(OSError):  # no tc: no caps
        if shaping.present(lab):
            shaping.remove(lab)
            removed.append(f"tc caps on lo for {lab.net}.x")
    return removed
