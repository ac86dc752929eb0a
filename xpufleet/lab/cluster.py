"""The lab cluster: N simulated Intel Max nodes on this machine, each a real sshd.

    lab = Lab(Path(".lab"), net="127.0.1", port=22022)   # or Lab.from_env()
    lab.up(nodes=4)                 # idempotent: converges to 4 nodes of the profile
    lab.inject(2, "clock_skew")     # OS-level fault on node2 (heal() undoes it)
    with lab.fault(3, "dead_node"): ...
    lab.status().all_up
    lab.down()                      # no process, mount, namespace or firewall rule left

Node i is `node<i>` at `<net>.<i>:<port>`: its own mount + UTS namespace (see
nodeinit.py), bind mounts over /opt/intel, /opt/xpufleet, /var/lib/xpufleet, /models
(its own), /opt/intel/oneapi and /etc/OpenCL/vendors (read-only, shared by the lab),
/var/lib/dpkg/status, /etc/hosts and root's ~/.bashrc (shared files), a simulated
/sys/class/drm and /sys/module/<driver>, and a per-node bin dir first on sshd's PATH.

Lab directory layout (`lab_dir`):
    id_ed25519, authorized_keys, known_hosts, inventory.yaml, state.json, .lock
    shared/                              oneAPI trees, dpkg status, hosts, bashrc, ...
    nodes/node<i>/ssh_host_ed25519_key   kept across up/down (known_hosts stays valid)
    nodes/node<i>/{fs,bin}               the node's own files; wiped by down
    nodes/node<i>/{sshd_config,sshd.pid,node.log,spec.json}

Processes of a node are found by namespace, not by pid lists alone: every process
whose mount namespace has this node's /opt/intel (same device and inode as
nodes/node<i>/fs/opt_intel) belongs to the node, including ranks that later tasks
started with setsid. So `down` works after a crash and without a state file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import PROJECT_ROOT
from ..errors import InputError
from ..host import Host
from ..transport import SSHOptions, known_hosts_name
from . import bastion, pybase, shaping, upstream_sglang
from . import model as labmodel
from .profile import FAULTS, Fault, LabError, NodeSpec, Profile, load_profile
from .sim import generate
from .slurm import LabSlurm, render_slurm_inventory

DEFAULT_DIR = ".lab"
DEFAULT_NET = "127.0.1"
DEFAULT_PORT = 22022
SSHD = "/usr/sbin/sshd"
NODEINIT = Path(__file__).resolve().parent / "nodeinit.py"
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
#: each node's own directories: (name under nodes/node<i>/fs, mount point on the node)
NODE_DIRS: tuple[tuple[str, str], ...] = (
    ("opt_intel", "/opt/intel"),
    ("opt_xpufleet", "/opt/xpufleet"),
    ("var_lib_xpufleet", "/var/lib/xpufleet"),
    ("models", "/models"),
    ("dev_dri", "/dev/dri"),
)
#: the group that owns the simulated render nodes (see bastion.DRI_GROUP)
DRI_GROUP = bastion.DRI_GROUP
#: where a node sees its oneAPI release (a read-only bind of the lab's shared copy)
ONEAPI_MOUNT = "/opt/intel/oneapi"
#: mount points that must exist on the host (empty directories there)
HOST_MOUNT_POINTS = ("/opt/intel", "/opt/xpufleet", "/var/lib/xpufleet", "/models",
                     "/etc/OpenCL/vendors", "/dev/dri")  # fmt: skip
#: the machine's local package folders, hidden on every node (an empty read-only
#: directory over each that exists): with OFFLINE_PIP_ENV, a node's pip sees nothing
HIDDEN_PACKAGE_DIRS = ("/opt/pypi", "/opt/pypi-more", "/opt/wheels")
#: faults that are only files on the node: applied by re-rendering its files
FILE_FAULTS = frozenset({"old_oneapi", "missing_xpu_smi", "torch_no_xccl"})
START_TIMEOUT = 30.0
KILL_TIMEOUT = 10.0
_SAFE_PATH = re.compile(r"^[A-Za-z0-9._/+-]+$")
_NET = re.compile(r"^127\.(\d{1,3})\.(\d{1,3})$")


# -- results ----------------------------------------------------------------------------
@dataclass
class NodeStatus:
    """One node as `lab.status` sees it."""

    name: str
    address: str
    port: int
    state: str  # "up" (sshd answers), "down" (namespace alive, sshd not), "gone"
    holder: int | None = None
    sshd: int | None = None
    faults: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "state": self.state,
            "holder_pid": self.holder,
            "sshd_pid": self.sshd,
            "faults": self.faults,
        }


@dataclass
class LabStatus:
    """The whole lab: running when any node namespace exists."""

    lab_dir: str
    net: str
    port: int
    nodes: list[NodeStatus] = field(default_factory=list)
    #: namespaces of this lab's nodes that are not in the state file
    orphans: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return any(n.state != "gone" for n in self.nodes) or bool(self.orphans)

    @property
    def all_up(self) -> bool:
        return bool(self.nodes) and all(n.state == "up" for n in self.nodes) and not self.orphans

    def to_json(self) -> dict[str, Any]:
        return {
            "lab_dir": self.lab_dir,
            "net": self.net,
            "port": self.port,
            "running": self.running,
            "all_up": self.all_up,
            "nodes": [n.to_json() for n in self.nodes],
            "orphans": self.orphans,
        }


# -- process helpers --------------------------------------------------------------------
def _ns_inode(pid: int | str, kind: str = "mnt") -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _namespaces() -> dict[int, list[int]]:
    """Every mount namespace other than ours -> the pids in it."""
    own = _ns_inode("self")
    groups: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        inode = _ns_inode(entry.name)
        if inode is None or inode == own:
            continue
        groups.setdefault(inode, []).append(int(entry.name))
    return groups


def pid_alive(pid: int | None) -> bool:
    """Whether a process runs (a zombie or dead entry does not count)."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _port_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _kill_all(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _render_nodes(directory: Path, cards: int) -> None:
    """The node's /dev/dri: card<n> and renderD<128+n> character devices (226, as the DRM
    driver registers them), root:video 0660, matching the simulated /sys/class/drm."""
    import grp

    try:
        gid = grp.getgrnam(DRI_GROUP).gr_gid
    except KeyError:
        gid = 0
    for n in range(cards):
        for name, minor in ((f"card{n}", n), (f"renderD{128 + n}", 128 + n)):
            path = directory / name
            if not path.exists():
                os.mknod(path, 0o660 | stat.S_IFCHR, os.makedev(226, minor))
            os.chown(path, 0, gid)
            path.chmod(0o660)


def ed25519_keypair() -> tuple[bytes, str]:
    """(OpenSSH private key bytes, 'ssh-ed25519 AAAA...' public line), made in-process."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode()


# -- the lab ----------------------------------------------------------------------------
class Lab:
    """One lab: a directory, an address prefix (`127.x.y`) and an SSH port."""

    def __init__(
        self, lab_dir: Path | str = DEFAULT_DIR, net: str = DEFAULT_NET, port: int = DEFAULT_PORT
    ) -> None:
        path = Path(lab_dir).expanduser()
        self.dir = path if path.is_absolute() else PROJECT_ROOT / path
        self.net = net
        self.port = int(port)
        self._lock = threading.RLock()
        self._lock_depth = 0
        self._lock_file: Any = None
        #: generated shared files already written by this object (release/spec -> path)
        self._made: dict[str, Path] = {}

    @classmethod
    def from_env(cls, lab_dir: str | None = None) -> Lab:
        """The lab the environment names (XPUFLEET_LAB_DIR/NET/PORT), else the defaults.

        `lab_dir` (the `lab_dir` setting) is used when XPUFLEET_LAB_DIR is not set.
        """
        directory = os.environ.get("XPUFLEET_LAB_DIR") or lab_dir or DEFAULT_DIR
        net = os.environ.get("XPUFLEET_LAB_NET") or DEFAULT_NET
        port_text = os.environ.get("XPUFLEET_LAB_PORT") or str(DEFAULT_PORT)
        if not port_text.isdigit():
            raise InputError(f"not a port: {port_text!r}", key="XPUFLEET_LAB_PORT")
        return cls(directory, net, int(port_text))

    def __repr__(self) -> str:
        return f"Lab({str(self.dir)!r}, net={self.net!r}, port={self.port})"

    # -- paths and names ----------------------------------------------------------------
    @property
    def key_file(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def authorized_keys(self) -> Path:
        return self.dir / "authorized_keys"

    @property
    def inventory_path(self) -> Path:
        return self.dir / "inventory.yaml"

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def slurm(self) -> LabSlurm:
        """The lab's own Slurm (`up(slurm=True)` starts it; see slurm.py)."""
        return LabSlurm(self)

    @property
    def slurm_inventory_path(self) -> Path:
        """The `plugin: slurm` inventory of the lab (written while its Slurm runs)."""
        return self.dir / "inventory-slurm.yaml"

    @property
    def tag(self) -> str:
        """Names this lab in iptables comments, so `down` removes exactly its own rules."""
        return "xpufleet-lab:" + hashlib.sha1(str(self.dir).encode()).hexdigest()[:10]

    def node_address(self, index: int) -> str:
        return f"{self.net}.{index}"

    def private_address(self, index: int) -> str | None:
        """Node<index>'s address behind the bastion (None when NET leaves no room)."""
        try:
            return f"{bastion.private_net(self.net)}.{index}"
        except (InputError, IndexError, ValueError):
            return None

    def _private_net(self) -> str | None:
        address = self.private_address(1)
        return address.rsplit(".", 1)[0] if address else None

    def bastion_up(self) -> bastion.Accounts:
        """Add the login node, the firewall and the non-root accounts (see bastion.py)."""
        with self._locked():
            return bastion.up(self)

    # -- the split network: a fabric NIC per node ------------------------------------------
    @property
    def fabric_net(self) -> str:
        """The fabric network of this lab: `127.(X+192).Y` for net `127.X.Y` (X < 64), so it
        is derived from the lab's own net (two labs never share one), stays on 127/8 and
        clears both the labs' nets (X < 128) and the bastion's private nets (X+128)."""
        _, x, y = self.net.split(".")
        if int(x) >= 64:
            raise InputError(
                f"the lab's fabric network needs a NET of 127.X.Y with X < 64, got {self.net}",
                key="net",
            )
        return f"127.{int(x) + 192}.{y}"

    def fabric_address(self, index: int) -> str:
        """Node i's address on the fabric (where ranks rendezvous and talk)."""
        return f"{self.fabric_net}.{index}"

    def fabric_nic(self, index: int) -> str:
        """Node i's fabric interface, named like a Slingshot NIC (`hsn`) and unique on the
        machine (nodes share one network namespace): `hsn<X>-<Y>-<i>` for net 127.X.Y."""
        _, x, y = self.net.split(".")
        return f"hsn{x}-{y}-{index}"

    def _ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True, env=CLEAN_ENV)
        if check and proc.returncode != 0:
            raise LabError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def _fabric_nics(self) -> dict[int, str]:
        """This lab's fabric interfaces that exist now: {node index: name}."""
        prefix = self.fabric_nic(0)[:-1]
        found = {}
        for line in self._ip("-o", "link", "show", check=False).stdout.splitlines():
            name = line.split(":", 2)[1].strip().split("@", 1)[0] if ":" in line else ""
            rest = name[len(prefix) :]
            if name.startswith(prefix) and rest.isdigit():
                found[int(rest)] = name
        return found

    def _fabric_up(self, count: int) -> None:
        """Node i gets `fabric_nic(i)` (a veth pair: `dummy` is not available on these
        kernels, REFERENCE §9) carrying `fabric_address(i)/24`; extra ones go."""
        existing = self._fabric_nics()
        for index, name in existing.items():
            if index > count:
                self._ip("link", "del", name, check=False)
        for index in range(1, count + 1):
            name = self.fabric_nic(index)
            if index not in existing:
                self._ip("link", "add", name, "type", "veth", "peer", "name", "hsp" + name[3:])
            self._ip("link", "set", name, "up")
            self._ip("link", "set", "hsp" + name[3:], "up")
            wanted = f"{self.fabric_address(index)}/24"
            if wanted not in self._ip("-o", "addr", "show", "dev", name).stdout:
                self._ip("addr", "add", wanted, "dev", name, "noprefixroute")

    def _fabric_down(self) -> int:
        nics = self._fabric_nics()
        for name in nics.values():
            self._ip("link", "del", name, check=False)  # takes its peer with it
        return len(nics)

    def node_dir(self, index: int) -> Path:
        return self.dir / "nodes" / f"node{index}"

    def holder_name(self, index: int) -> str:
        return f"xpufleet-lab:{self.dir}:node{index}"

    def hosts(self, count: int | None = None) -> list[Host]:
        """Host objects of the running lab's nodes (without going through an inventory)."""
        if count is None:
            count = len(self._read_state().get("nodes", {}))
        return [
            Host(
                name=f"node{i}",
                address=self.node_address(i),
                port=self.port,
                user="root",
                key_file=str(self.key_file),
                groups=("gpu_nodes",),
                vars={"known_hosts": str(self.known_hosts)},
            )
            for i in range(1, count + 1)
        ]

    def ssh_options(self, **overrides: Any) -> SSHOptions:
        values: dict[str, Any] = {
            "known_hosts": self.known_hosts,
            "key_file": str(self.key_file),
            "connect_timeout": 5.0,
            "command_timeout": 120.0,
        }
        values.update(overrides)
        return SSHOptions(**values)

    # -- validation -----------------------------------------------------------------------
    def validate(self, count: int | None = None) -> None:
        """Refuse a bad lab address, port, directory or node count (exit 2)."""
        match = _NET.match(self.net)
        if not match or max(int(match.group(1)), int(match.group(2))) > 255:
            raise InputError(f"lab network must look like 127.X.Y, got {self.net!r}", key="net")
        if not 1024 <= self.port <= 65535:
            raise InputError(f"lab SSH port must be 1024-65535, got {self.port}", key="port")
        if not _SAFE_PATH.match(str(self.dir)):
            raise InputError(
                f"lab directory may hold only letters, digits and ._/+- : {self.dir}",
                key="lab_dir",
            )
        if count is not None and not 1 <= count <= 254:
            raise InputError(f"a lab has 1 to 254 nodes, not {count}", key="nodes")

    # -- locking and state --------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One change at a time per lab dir (across processes; re-entrant in-process)."""
        with self._lock:
            if self._lock_depth == 0:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._lock_file = (self.dir / ".lock").open("a")
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                    self._lock_file.close()
                    self._lock_file = None

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_path)

    # -- finding the lab's processes ----------------------------------------------------
    def _node_identities(self) -> dict[tuple[int, int], int]:
        """(st_dev, st_ino) of each node's /opt/intel copy -> node index."""
        found: dict[tuple[int, int], int] = {}
        nodes = self.dir / "nodes"
        if not nodes.is_dir():
            return found
        for entry in nodes.iterdir():
            match = re.match(r"^node(\d+)$", entry.name)
            if not match:
                continue
            with contextlib.suppress(OSError):
                st = (entry / "fs" / "opt_intel").stat()
                found[(st.st_dev, st.st_ino)] = int(match.group(1))
        return found

    def _node_processes(self) -> dict[int, list[int]]:
        """node index -> pids of every process in that node's namespaces."""
        identities = self._node_identities()
        holders = self._holders()
        result: dict[int, list[int]] = {}
        for _inode, pids in _namespaces().items():
            index = None
            for pid in pids:
                if pid in holders:
                    index = holders[pid]
                    break
                with contextlib.suppress(OSError):
                    st = os.stat(f"/proc/{pid}/root/opt/intel")
                    index = identities.get((st.st_dev, st.st_ino))
                    break
            if index is not None:
                result.setdefault(index, []).extend(pids)
        return result

    def _holders(self) -> dict[int, int]:
        """pid -> node index of this lab's holder processes (found by their name)."""
        prefix = f"xpufleet-lab:{self.dir}:node".encode()
        holders: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/cmdline", "rb") as fh:
                    argv0 = fh.read().split(b"\0", 1)[0]
            except OSError:
                continue
            if argv0.startswith(prefix) and argv0[len(prefix) :].isdigit():
                holders[int(entry.name)] = int(argv0[len(prefix) :])
        return holders

    def _kill_nodes(self, indexes: set[int] | None = None, *, keep_holder: bool = False) -> int:
        """SIGKILL every process of the given nodes (all if None) until none is left."""
        killed: set[int] = set()
        deadline = time.monotonic() + KILL_TIMEOUT
        holders = self._holders() if keep_holder else {}
        while True:
            victims = [
                pid
                for index, pids in self._node_processes().items()
                if indexes is None or index in indexes
                for pid in pids
                if pid not in holders and pid_alive(pid)
            ]
            if not victims:
                return len(killed)
            if time.monotonic() > deadline:
                raise LabError(f"processes of the lab would not die: {sorted(victims)}")
            _kill_all(victims)
            killed.update(victims)
            time.sleep(0.02)

    # -- firewall -------------------------------------------------------------------------
    def _rule(self, index: int, port: int) -> list[str]:
        """A DROP of `port` on the node's addresses: its SSH one and its fabric one."""
        return [
            "INPUT",
            "-d",
            f"{self.node_address(index)}/32,{self.fabric_address(index)}/32",
            "-p",
            "tcp",
            "-m",
            "tcp",
            "--dport",
            str(port),
            "-m",
            "comment",
            "--comment",
            f"{self.tag}:node{index}",
            "-j",
            "DROP",
        ]

    def _iptables(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["iptables", "-w", "10", *args], capture_output=True, text=True, env=CLEAN_ENV
        )
        if check and proc.returncode != 0:
            raise LabError(f"iptables {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def _remove_rules(self, indexes: set[int] | None = None) -> int:
        """Delete this lab's DROP rules (of the given nodes, or all), found by their comment."""
        if shutil.which("iptables", path=CLEAN_ENV["PATH"]) is None:
            return 0
        removed = 0
        for line in self._iptables("-S").splitlines():
            if not line.startswith("-A ") or f"{self.tag}:" not in line:
                continue
            words = shlex.split(line)
            comment = words[words.index("--comment") + 1] if "--comment" in words else ""
            node = comment.rsplit(":node", 1)[-1]
            if indexes is not None and not (node.isdigit() and int(node) in indexes):
                continue
            self._iptables("-D", *words[1:])
            removed += 1
        return removed

    # -- rendering a node -----------------------------------------------------------------
    def _ensure_keys(self, count: int) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self.key_file.exists():
            private, public = ed25519_keypair()
            self.key_file.write_bytes(private)
            self.key_file.chmod(0o600)
            Path(f"{self.key_file}.pub").write_text(f"{public} xpufleet-lab\n")
        public = Path(f"{self.key_file}.pub").read_text().strip()
        if not self.authorized_keys.exists() or self.authorized_keys.read_text().strip() != public:
            self.authorized_keys.write_text(public + "\n")
            self.authorized_keys.chmod(0o600)
        for i in range(1, count + 1):
            key = self.node_dir(i) / "ssh_host_ed25519_key"
            if not key.exists():
                key.parent.mkdir(parents=True, exist_ok=True)
                private, public_line = ed25519_keypair()
                key.write_bytes(private)
                key.chmod(0o600)
                Path(f"{key}.pub").write_text(f"{public_line} node{i}\n")

    def _write_known_hosts(self, count: int) -> None:
        lines = []
        for i in range(1, count + 1):
            pub = (self.node_dir(i) / "ssh_host_ed25519_key.pub").read_text().split()
            for address in (self.node_address(i), self.private_address(i)):
                if address:
                    host = Host(f"node{i}", address, self.port)
                    lines.append(f"{known_hosts_name(host)} {pub[0]} {pub[1]}")
        login_key = bastion.bastion_dir(self) / "ssh_host_ed25519_key.pub"
        if login_key.exists():
            pub = login_key.read_text().split()
            host = Host("bastion", bastion.bastion_address(self), self.port)
            lines.append(f"{known_hosts_name(host)} {pub[0]} {pub[1]}")
        self.known_hosts.write_text("\n".join(lines) + "\n")

    @property
    def shared(self) -> Path:
        """Files every node of this lab mounts (read-only where nodes must not write)."""
        return self.dir / "shared"

    def _oneapi_dir(self, release: str) -> Path:
        """The lab's copy of a oneAPI release tree (made once, shared by the nodes)."""
        key = f"oneapi:{release}"
        if key not in self._made:
            path = self.shared / "oneapi" / release
            generate.write_tree(path, generate.oneapi_tree(release), prune=True)
            self._made[key] = path
        return self._made[key]

    def _dpkg_status_file(self, spec: NodeSpec) -> Path:
        """The host's dpkg status plus the node's simulated packages (one file per variant)."""
        key = f"dpkg:{spec.level_zero}:{spec.compute_runtime}"
        if key not in self._made:
            real = Path("/var/lib/dpkg/status").read_text(errors="replace")
            text = generate.dpkg_status(real, spec)
            path = self.shared / f"dpkg-status-{hashlib.sha1(text.encode()).hexdigest()[:10]}"
            generate.write_tree(path.parent, {path.name: generate.file(text, in_place=True)})
            self._made[key] = path
        return self._made[key]

    def _render_shared(self, count: int) -> None:
        hosts = Path("/etc/hosts").read_text(errors="replace")
        tree: generate.Tree = {
            "etc_hosts": generate.file(
                generate.etc_hosts(hosts, self.net, count, self._private_net()), in_place=True
            ),
            "bashrc": generate.file(generate.BASHRC, in_place=True),
            "opencl_vendors/intel.icd": generate.file(generate.OPENCL_ICD),
        }
        generate.write_tree(self.shared, tree)
        for stage in ("class", "module"):
            (self.shared / "stage" / stage).mkdir(parents=True, exist_ok=True)

    def _render_node(self, index: int, spec: NodeSpec, faults: dict[str, Any]) -> None:
        """Write node<index>'s own files for its spec and current faults (idempotent)."""
        node = self.node_dir(index)
        name = f"node{index}"
        fs = node / "fs"
        for sub, _target in NODE_DIRS:
            (fs / sub).mkdir(parents=True, exist_ok=True)
        (fs / "opt_intel" / "oneapi").mkdir(exist_ok=True)  # mount point of the release
        _render_nodes(fs / "dev_dri", spec.cards)
        torch_info = generate.torch_description(
            spec, xccl="torch_no_xccl" not in faults, driver="no_driver" not in faults
        )
        lab_files: generate.Tree = {
            "node.json": generate.file(
                json.dumps(generate.node_description(name, spec), indent=2) + "\n"
            ),
            "torch.json": generate.file(json.dumps(torch_info, indent=2) + "\n"),
        }
        generate.write_tree(fs / "opt_intel" / ".lab", lab_files, prune=True)
        tools = generate.bin_tree(with_xpu_smi="missing_xpu_smi" not in faults)
        generate.write_tree(node / "bin", tools, prune=True)
        config = generate.sshd_config(
            address=self.node_address(index),
            port=self.port,
            host_key=node / "ssh_host_ed25519_key",
            authorized_keys=self.authorized_keys,
            pid_file=node / "sshd.pid",
            bin_dir=node / "bin",
            clock_skew=faults.get("clock_skew"),
            extra_address=self.private_address(index),
            users=bastion.accounts(self.net).users if self.private_address(index) else (),
        )
        generate.write_tree(node, {"sshd_config": generate.file(config)})

    def _sshd_argv(self, index: int) -> list[str]:
        node = self.node_dir(index)
        return [SSHD, "-f", str(node / "sshd_config"), "-E", str(node / "node.log")]

    def _node_spec_file(
        self, index: int, spec: NodeSpec, faults: dict[str, Any], start_sshd: bool
    ) -> Path:
        """What nodeinit.py needs to start node<index>: mounts, /sys entries, sshd."""
        node = self.node_dir(index)
        release = faults.get("old_oneapi") or spec.oneapi
        binds: list[tuple[str, str, bool]] = [
            (str(node / "fs" / sub), target, False) for sub, target in NODE_DIRS
        ]
        binds += [
            (str(self._oneapi_dir(release)), ONEAPI_MOUNT, True),
            (str(self.shared / "opencl_vendors"), "/etc/OpenCL/vendors", True),
            (str(self._dpkg_status_file(spec)), "/var/lib/dpkg/status", False),
            (str(self.shared / "etc_hosts"), "/etc/hosts", False),
        ]
        empty = self.shared / "empty"
        empty.mkdir(parents=True, exist_ok=True)
        binds += [(str(empty), d, True) for d in HIDDEN_PACKAGE_DIRS if Path(d).is_dir()]
        bashrc = Path(os.path.expanduser("~root")) / ".bashrc"
        if bashrc.is_file():
            binds.append((str(self.shared / "bashrc"), str(bashrc), False))
        sysfs = generate.sysfs_tree(f"node{index}", spec)
        parts = []
        for top, target in (("class", "/sys/class"), ("module", "/sys/module")):
            entries = {
                rel.split("/", 1)[1]: {"content": e.content, "mode": e.mode, "link": e.link}
                for rel, e in sysfs.items()
                if rel.startswith(top + "/")
            }
            parts.append(
                {"target": target, "stage": str(self.shared / "stage" / top), "entries": entries}
            )
        doc = {
            "hostname": f"node{index}",
            "binds": binds,
            "sys": parts,
            "sshd": self._sshd_argv(index) if start_sshd else None,
            "log": str(node / "node.log"),
            "holder_name": self.holder_name(index),
        }
        path = node / "spec.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        return path

    # -- starting and stopping nodes ----------------------------------------------------
    def _start_nodes(self, specs: dict[int, NodeSpec]) -> dict[int, dict[str, Any]]:
        """Start nodes in parallel (with their start-time faults); index -> {holder, mnt, uts}."""
        indexes = sorted(specs)
        for target in HOST_MOUNT_POINTS:
            Path(target).mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"
        procs: dict[int, subprocess.Popen[bytes]] = {}
        for i in indexes:
            node = self.node_dir(i)
            (node / "sshd.pid").unlink(missing_ok=True)
            (node / "node.log").write_text("")
            faults = self._initial_faults(specs[i])
            spec_file = self._node_spec_file(i, specs[i], faults, "dead_node" not in faults)
            with (node / "node.log").open("a") as log:
                procs[i] = subprocess.Popen(
                    [python, "-I", "-S", str(NODEINIT), str(spec_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=CLEAN_ENV,
                    cwd="/",
                    start_new_session=True,
                )
        started: dict[int, dict[str, Any]] = {}
        errors: list[str] = []
        for i, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=START_TIMEOUT)
                result = json.loads(out.decode().strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                proc.kill()
                proc.wait()
                log_tail = (self.node_dir(i) / "node.log").read_text(errors="replace")[-400:]
                errors.append(f"node{i}: did not start: {log_tail.strip()}")
                continue
            if not result.get("ok"):
                errors.append(f"node{i}: {result.get('error')}")
                continue
            started[i] = result
        waiting = {i for i in started if not specs[i].fault("dead_node")}
        deadline = time.monotonic() + START_TIMEOUT
        while waiting and time.monotonic() < deadline:
            waiting = {i for i in waiting if _read_pid(self.node_dir(i) / "sshd.pid") is None}
            if waiting:
                time.sleep(0.02)
        for i in sorted(waiting):
            tail = (self.node_dir(i) / "node.log").read_text(errors="replace")[-400:]
            errors.append(f"node{i}: sshd did not come up: {tail.strip()}")
        if errors:
            self._kill_nodes(set(indexes))
            raise LabError("lab nodes failed to start: " + "; ".join(errors))
        return started

    def _start_sshd(self, index: int, holder: int) -> None:
        """Start node<index>'s sshd inside its namespaces (after dead_node, or a restart)."""
        pid_file = self.node_dir(index) / "sshd.pid"
        pid_file.unlink(missing_ok=True)
        argv = ["nsenter", f"--target={holder}", "--mount", "--uts", "--", *self._sshd_argv(index)]
        with (self.node_dir(index) / "node.log").open("a") as log:
            proc = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=CLEAN_ENV, cwd="/"
            )
        if proc.returncode != 0:
            raise LabError(f"node{index}: sshd failed to start (exit {proc.returncode})")
        deadline = time.monotonic() + START_TIMEOUT
        while _read_pid(pid_file) is None:
            if time.monotonic() > deadline:
                raise LabError(f"node{index}: sshd did not come up")
            time.sleep(0.02)

    def _stop_sshd(self, index: int) -> None:
        """Stop only the listening sshd; open sessions go on (used to reload its config)."""
        pid_file = self.node_dir(index) / "sshd.pid"
        pid = _read_pid(pid_file)
        if pid is not None and pid_alive(pid):
            _kill_all([pid], signal.SIGTERM)
            deadline = time.monotonic() + KILL_TIMEOUT
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if pid_alive(pid):
                _kill_all([pid])
        pid_file.unlink(missing_ok=True)

    def _wipe_node(self, index: int) -> None:
        node = self.node_dir(index)
        for sub in ("fs", "bin"):
            shutil.rmtree(node / sub, ignore_errors=True)
        for name in ("sshd.pid", "spec.json", "sshd_config"):
            (node / name).unlink(missing_ok=True)

    # -- faults -------------------------------------------------------------------------
    def _holder_of(self, index: int, state: dict[str, Any]) -> int:
        entry = state.get("nodes", {}).get(str(index))
        holder = entry.get("holder") if entry else None
        if not pid_alive(holder) or _ns_inode(holder) != entry.get("mnt"):
            raise LabError(f"node{index} is not running (run `invoke lab.up`)")
        return int(holder)

    def _set_fault(
        self, index: int, name: str, param: Any, on: bool, state: dict[str, Any], spec: NodeSpec
    ) -> None:
        """Make the OS of node<index> show (or stop showing) one fault."""
        entry = state["nodes"][str(index)]
        holder = self._holder_of(index, state)
        faults: dict[str, Any] = entry.setdefault("faults", {})
        if on:
            faults[name] = param
        else:
            faults.pop(name, None)
        root = Path(f"/proc/{holder}/root")
        if name in ("missing_xpu_smi", "torch_no_xccl"):
            self._render_node(index, spec, faults)
        elif name == "old_oneapi":
            release = str(param) if on else spec.oneapi
            source = self._oneapi_dir(release)
            self._nsenter(holder, "umount", "-l", ONEAPI_MOUNT)
            self._nsenter(holder, "mount", "--bind", "-o", "ro", str(source), ONEAPI_MOUNT)
        elif name == "clock_skew":
            self._render_node(index, spec, faults)
            if "dead_node" not in faults:
                self._stop_sshd(index)
                self._start_sshd(index, holder)
        elif name == "no_driver":
            self._render_node(index, spec, faults)  # torch.json: no XPU without a driver
            sysfs = root / "sys"
            if on:
                drm = sysfs / "class/drm"
                for entry_path in drm.iterdir() if drm.is_dir() else []:
                    generate.remove_path(entry_path)
                shutil.rmtree(sysfs / "module" / spec.driver, ignore_errors=True)
            else:
                generate.write_tree(sysfs, generate.sysfs_tree(f"node{index}", spec))
        elif name == "full_disk":
            if on:
                self._nsenter(holder, "mount", "-t", "tmpfs", "-o", f"size={param},mode=0755",
                              "xpufleet-lab-full", "/models")  # fmt: skip
                self._fill(root / "models", self.node_dir(index) / "fs" / "models")
            else:
                self._nsenter(holder, "umount", "-l", "/models")
        elif name == "blocked_port":
            if on:
                self._iptables("-I", *self._rule(index, int(param)))
            else:
                self._remove_rules({index})
        elif name in labmodel.MODEL_FAULTS:
            copy = self.node_dir(index) / "fs" / "models" / labmodel.LAB_MODEL
            if on:
                labmodel.break_model(copy, name, int(param))
            else:
                labmodel.install(self.model_source, copy)
        elif name == "dead_node":
            if on:
                self._kill_nodes({index}, keep_holder=True)
                (self.node_dir(index) / "sshd.pid").unlink(missing_ok=True)
            else:
                self._start_sshd(index, holder)
                if state.get("slurm"):
                    self.slurm.start_node(index, holder)

    def _nsenter(self, holder: int, *argv: str) -> None:
        proc = subprocess.run(
            ["nsenter", f"--target={holder}", "--mount", "--", *argv],
            capture_output=True,
            text=True,
            env=CLEAN_ENV,
            cwd="/",
        )
        if proc.returncode != 0:
            raise LabError(f"{' '.join(argv)} in the node failed: {proc.stderr.strip()}")

    @staticmethod
    def _fill(mounted: Path, real: Path) -> None:
        """Keep the model dir's entries visible (symlinks), then fill the tmpfs to 100%."""
        for entry in sorted(real.iterdir()) if real.is_dir() else []:
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink():
                    # a model directory lives ON the full disk; its files stay readable
                    (mounted / entry.name).mkdir()
                    for item in entry.iterdir():
                        os.symlink(item, mounted / entry.name / item.name)
                else:
                    os.symlink(entry, mounted / entry.name)
        block = b"\0" * 65536
        with contextlib.suppress(OSError), (mounted / ".full").open("wb") as fh:
            while True:
                fh.write(block)
                fh.flush()

    def _reconcile(self, index: int, spec: NodeSpec, state: dict[str, Any]) -> None:
        """Bring a running node's faults to what its spec asks for."""
        entry = state["nodes"][str(index)]
        current: dict[str, Any] = dict(entry.get("faults", {}))
        wanted = {f.name: f.param for f in spec.faults}
        for name, param in current.items():
            if name not in wanted or wanted[name] != param:
                self._set_fault(index, name, param, False, state, spec)
        current = dict(entry.get("faults", {}))
        order = [n for n in FAULTS if n in wanted and n not in current]
        for name in order:
            self._set_fault(index, name, wanted[name], True, state, spec)

    # -- public API -----------------------------------------------------------------------
    def up(
        self,
        nodes: int | None = None,
        profile: Profile | str | Path | None = None,
        *,
        slurm: bool | None = None,
    ) -> LabStatus:
        """Start (or converge) the lab: `nodes` nodes (default: the profile's count) as the
        profile describes them. Nodes already running with the same hardware are kept;
        their faults are brought to the profile's; extra nodes are stopped.

        `slurm`: True starts the lab's Slurm too, False stops it, None keeps it as it was."""
        prof = profile if isinstance(profile, Profile) else load_profile(profile)
        count = nodes if nodes is not None else prof.count
        self.validate(count)
        env = pybase.ensure_base_env()
        with self._locked():
            self._made.clear()  # files may have been changed by hand since the last call
            state = self._read_state()
            if state and (state.get("net"), state.get("port")) != (self.net, self.port):
                self._down_locked()
                state = {}
            had_slurm = bool(state.get("slurm"))
            running = self._node_processes()
            self._ensure_keys(count)
            self._render_shared(count)
            old_nodes: dict[str, Any] = state.get("nodes", {})
            extra = {i for i in running if i > count} | {
                int(k) for k in old_nodes if int(k) > count
            }
            if extra:
                self._kill_nodes(extra)
                self._remove_rules(extra)
                for i in extra:
                    self._wipe_node(i)
            state = {
                "net": self.net,
                "port": self.port,
                "profile": prof.path,
                "nodes": {},
            }
            to_start: list[int] = []
            keep: list[int] = []
            for i in range(1, count + 1):
                spec = prof.node(i)
                old = old_nodes.get(str(i))
                healthy = (
                    old is not None
                    and i in running
                    and pid_alive(old.get("holder"))
                    and _ns_inode(old["holder"]) == old.get("mnt")
                    and old.get("hardware") == spec.hardware_hash()
                )
                if healthy:
                    assert old is not None
                    state["nodes"][str(i)] = old
                    self._render_node(i, spec, old.get("faults", {}))
                    keep.append(i)
                    continue
                self._render_node(i, spec, self._initial_faults(spec))
                to_start.append(i)
            if set(to_start) & set(running):
                self._kill_nodes(set(to_start) & set(running))
            if to_start:
                self._remove_rules(set(to_start))
            started = self._start_nodes({i: prof.node(i) for i in to_start})
            for i, result in started.items():
                spec = prof.node(i)
                state["nodes"][str(i)] = {
                    "holder": result["holder"],
                    "mnt": result["mnt"],
                    "uts": result["uts"],
                    "hardware": spec.hardware_hash(),
                    "spec": spec.hardware(),
                    "faults": self._initial_faults(spec),
                }
            self._write_state(state)
            for i in keep:
                spec = prof.node(i)
                entry = state["nodes"][str(i)]
                faults = entry.get("faults", {})
                pid = _read_pid(self.node_dir(i) / "sshd.pid")
                if "dead_node" not in faults and not pid_alive(pid):
                    self._start_sshd(i, entry["holder"])
            for i in sorted(set(keep) | set(started)):
                spec = prof.node(i)
                before = dict(state["nodes"][str(i)].get("faults", {}))
                if i in started:
                    for fault in spec.faults:
                        if fault.name not in before:
                            self._set_fault(i, fault.name, fault.param, True, state, spec)
                else:
                    self._reconcile(i, spec, state)
                if state["nodes"][str(i)].get("faults", {}) != before:
                    self._write_state(state)
            self._install_models(count, state)
            self._fabric_up(count)
            self._write_known_hosts(count)
            self.inventory_path.write_text(
                render_inventory(self, [prof.node(i) for i in range(1, count + 1)], env)
            )
            if had_slurm if slurm is None else slurm:
                self._slurm_up(state, env)
            elif had_slurm or slurm is False:
                self.slurm.down()
                self.slurm_inventory_path.unlink(missing_ok=True)
            return self.status()

    def stop_slurm(self) -> int:
        """Stop the lab's Slurm, keep its nodes (a later `up` does not restart it)."""
        with self._locked():
            killed = self.slurm.down()
            state = self._read_state()
            if state.pop("slurm", None) is not None:
                self._write_state(state)
            self.slurm_inventory_path.unlink(missing_ok=True)
            return killed

    def _slurm_up(self, state: dict[str, Any], env: pybase.BaseEnv) -> None:
        """Converge the lab's Slurm to the running nodes (dead nodes get no slurmd)."""
        nodes = state["nodes"]
        holders = {int(i): entry["holder"] for i, entry in nodes.items()}
        dead = {int(i) for i, entry in nodes.items() if "dead_node" in entry.get("faults", {})}
        self.slurm.up(holders, dead=dead)
        state["slurm"] = True
        self._write_state(state)
        self.slurm_inventory_path.write_text(render_slurm_inventory(self, env))

    @property
    def model_source(self) -> Path:
        """The lab model's pristine copy on the control node (also a shared directory that
        every node sees at the same path: the lab's shared file system)."""
        return self.shared / "models" / labmodel.LAB_MODEL

    def _install_models(self, count: int, state: dict[str, Any]) -> None:
        """Every node holds a verified copy of the lab model (unless a model fault says
        otherwise), as if `model.stage` had put it there."""
        labmodel.write_model(self.model_source)
        for i in range(1, count + 1):
            faults = state["nodes"][str(i)].get("faults", {})
            if any(name in faults for name in labmodel.MODEL_FAULTS):
                continue
            labmodel.install(
                self.model_source, self.node_dir(i) / "fs" / "models" / labmodel.LAB_MODEL
            )

    @staticmethod
    def _initial_faults(spec: NodeSpec) -> dict[str, Any]:
        """Faults that are part of how a node starts (its files and its sshd)."""
        initial = FILE_FAULTS | {"clock_skew", "dead_node"}
        return {f.name: f.param for f in spec.faults if f.name in initial}

    def down(self) -> int:
        """Stop every node of this lab; returns how many processes were killed."""
        self.validate()
        if not self.dir.is_dir():  # nothing to lock; still stop nodes found by name
            killed = self.slurm.down() + self._kill_nodes(None)
            bastion.down(self)
            self._remove_rules(None)
            self._fabric_down()
            return killed
        with self._locked():
            return self._down_locked()

    def _down_locked(self) -> int:
        with contextlib.suppress(OSError):
            shaping.remove(self)  # bandwidth caps of a benchmark that was killed
        killed = self.slurm.down()
        self.slurm_inventory_path.unlink(missing_ok=True)
        killed += self._kill_nodes(None)
        bastion.down(self)
        self._remove_rules(None)
        self._fabric_down()
        nodes = self.dir / "nodes"
        if nodes.is_dir():
            for entry in nodes.iterdir():
                match = re.match(r"^node(\d+)$", entry.name)
                if match:
                    self._wipe_node(int(match.group(1)))
        self.state_path.unlink(missing_ok=True)
        return killed

    def status(self) -> LabStatus:
        """Per node: up (sshd answers) / down (namespace alive, sshd not) / gone."""
        state = self._read_state()
        status = LabStatus(str(self.dir), self.net, self.port)
        running = self._node_processes()
        known = {int(k) for k in state.get("nodes", {})}
        for i in sorted(known):
            entry = state["nodes"][str(i)]
            holder = entry.get("holder")
            node_ok = i in running and pid_alive(holder) and _ns_inode(holder) == entry.get("mnt")
            sshd = _read_pid(self.node_dir(i) / "sshd.pid")
            sshd_ok = node_ok and pid_alive(sshd) and _ns_inode(sshd) == entry.get("mnt")
            address = self.node_address(i)
            if sshd_ok and _port_open(address, self.port):
                node_state = "up"
            else:
                node_state = "down" if node_ok else "gone"
            faults = [Fault(n, p).label() for n, p in entry.get("faults", {}).items()]
            status.nodes.append(
                NodeStatus(
                    f"node{i}",
                    address,
                    self.port,
                    node_state,
                    holder if node_ok else None,
                    sshd if sshd_ok else None,
                    faults,
                )
            )
        status.orphans = [f"node{i}" for i in sorted(set(running) - known)]
        return status

    def node_pids(self, node: int | str) -> list[int]:
        """Pids of every process in node's namespaces (the lab's nodes share one process
        table, so a node's processes are told apart by namespace, not by pid lists)."""
        return sorted(self._node_processes().get(self._index(node), []))

    @staticmethod
    def _spec_for(index: int, state: dict[str, Any]) -> NodeSpec:
        """The node's hardware as it was started (kept in the state file)."""
        return NodeSpec(**state["nodes"][str(index)]["spec"])

    def _index(self, node: int | str) -> int:
        if isinstance(node, int):
            return node
        match = re.match(r"^(?:node)?(\d+)$", str(node))
        if not match:
            raise InputError(f"not a lab node: {node!r}", key="node")
        return int(match.group(1))

    def inject(self, node: int | str, fault: str, param: Any = None) -> None:
        """Give node (index or `node<i>`) a fault at runtime; `param` as in the profile."""
        index = self._index(node)
        if fault not in FAULTS:
            raise InputError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})", key="fault")
        value = FAULTS[fault][0] if param is None else param
        with self._locked():
            state = self._read_state()
            if str(index) not in state.get("nodes", {}):
                raise LabError(f"node{index} is not part of the running lab")
            spec = self._spec_for(index, state)
            current = state["nodes"][str(index)].get("faults", {})
            if fault in current and current[fault] != value:
                self._set_fault(index, fault, current[fault], False, state, spec)
            if current.get(fault, object()) != value:
                self._set_fault(index, fault, value, True, state, spec)
            self._write_state(state)

    def heal(self, node: int | str, fault: str) -> None:
        """Undo a fault on node (no-op if the node does not have it)."""
        index = self._index(node)
        if fault not in FAULTS:
            raise InputError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})", key="fault")
        with self._locked():
            state = self._read_state()
            entry = state.get("nodes", {}).get(str(index))
            if entry is None or fault not in entry.get("faults", {}):
                return
            spec = self._spec_for(index, state)
            self._set_fault(index, fault, entry["faults"][fault], False, state, spec)
            self._write_state(state)

    @contextlib.contextmanager
    def fault(self, node: int | str, fault: str, param: Any = None) -> Iterator[Lab]:
        """`with lab.fault(2, "full_disk"): ...` — injected inside, healed on the way out."""
        self.inject(node, fault, param)
        try:
            yield self
        finally:
            self.heal(node, fault)


# -- inventory --------------------------------------------------------------------------
#: what makes the lab's stand-in work on a small CPU machine: CPU torch with gloo, a
#: tiny model, thresholds sized for one shared 2-core box, pins available offline
LAB_SIZED_VARS: dict[str, Any] = {
    "device": "cpu",
    "dist_backend": "gloo",
    "model_path": "/models/xpufleet-lab-tiny",
    "model_name": "xpufleet-lab/tiny-tp",
    "model_size_gb": 0.01,
    "min_free_disk_gb": 1,
    "min_free_mem_gb": 1,
    "ready_timeout": 180,
    "pip_packages": ["py-cpuinfo==9.0.0", "msgspec"],
    # no Triton/vLLM builds for CPU here: the lab's stack is torch + the SGLang stand-in
    "stack": ["torch", "sglang"],
    # the stand-in's entry point imports its server and engine (and their runtime deps)
    "python_imports": ["sglang.launch_server"],
}


def render_inventory(
    lab: Lab,
    specs: list[NodeSpec],
    env: pybase.BaseEnv,
    *,
    key_file: str | None = None,
    known_hosts: str | None = None,
    header: str | None = None,
    sglang_python: Path | None = None,
) -> str:
    """The lab's Ansible-style inventory (what `invoke inventory` and every task read).

    Hardware expectations (`gpu_model`, `cards`, `tiles`, `device_hierarchy`) are
    written only where a node differs from xpufleet's defaults.
    """
    defaults = NodeSpec()
    sglang_python = sglang_python or upstream_sglang.python_path()
    hosts: dict[str, dict[str, Any]] = {}
    for i, spec in enumerate(specs, start=1):
        address = lab.node_address(i)
        # nodes share one network namespace: each serves HTTP on its own address only;
        # ranks meet on the fabric (split network: SSH on ansible_host, collectives on nic)
        # (each node's own fabric address: node 0's is where ranks meet; doctor probes
        # every node's, as if it were node 0)
        entry: dict[str, Any] = {
            "ansible_host": address,
            "sglang_host": address,
            "nic": lab.fabric_nic(i),
            "rendezvous_address": lab.fabric_address(i),
        }
        if spec.gpu_model != defaults.gpu_model:
            entry["gpu_model"] = spec.gpu_model
        if spec.cards != defaults.cards:
            entry["cards"] = spec.cards
        if spec.tiles != defaults.tiles:
            entry["tiles"] = spec.tiles
        if spec.hierarchy != defaults.hierarchy:
            entry["device_hierarchy"] = spec.hierarchy
        hosts[f"node{i}"] = entry
    doc = {
        "all": {
            "vars": {
                "ansible_user": "root",
                "ansible_port": lab.port,
                "ansible_ssh_private_key_file": key_file or str(lab.key_file),
                "known_hosts": known_hosts or str(lab.known_hosts),
                # the lab is never in the operator's ~/.ssh/config: read none
                "ansible_ssh_common_args": "-F none",
                "python": str(env.python),
                "base_site_packages": [str(env.site_packages)],
                # bench_serving is the REAL one (sglang 0.4.3.post2 from PyPI, its own env
                # once per machine: upstream_sglang.py); the stand-in has no client
                "bench_python": str(sglang_python),
                **LAB_SIZED_VARS,
            },
            "children": {"gpu_nodes": {"hosts": hosts}},
        }
    }
    text = header or (
        f"# Inventory of the xpufleet lab in {lab.dir} ({lab.net}.1-{len(specs)}, port "
        f"{lab.port}).\n# Written by `invoke lab.up`; rewritten on every lab.up.\n"
    )
    return text + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)


DEFAULT_INVENTORY_HEADER = (
    "# Inventory of the default lab: `invoke lab.up` starts node1..node4 on\n"
    "# 127.0.1.1-4, port 22022, with the key and known_hosts in .lab/ (paths relative to\n"
    "# this file). Generated by xpufleet.lab.cluster.default_inventory(); a unit test\n"
    "# keeps the two equal.\n"
)


def default_inventory() -> str:
    """The committed inventory/lab.yaml: the default 4-node lab, paths relative to it."""
    lab = Lab(DEFAULT_DIR, DEFAULT_NET, DEFAULT_PORT)
    return render_inventory(
        lab,
        [NodeSpec()] * 4,
        pybase.BaseEnv(pybase.DEFAULT_ROOT),
        sglang_python=upstream_sglang.python_path(upstream_sglang.DEFAULT_ROOT),
        key_file=f"../{DEFAULT_DIR}/id_ed25519",
        known_hosts=f"../{DEFAULT_DIR}/known_hosts",
        header=DEFAULT_INVENTORY_HEADER,
    )
