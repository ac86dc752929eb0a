"""The lab cluster: N simulated Intel Max nodes on this machine, each a real sshd.

    lab = Lab(Path(".lab"), net="127.0.1", port=22022)   # or Lab.from_env()
    lab.up(nodes=4)                 # idempotent: converges to 4 nodes of the profile
    lab.inject(2, "clock_skew")     # OS-level fault on node2 (heal() undoes it)
    with lab.fault(3, "dead_node"): ...
    lab.status().all_up
    lab.down()                      # no process, mount, namespace or firewall rule left

The lab's launch ports (rendezvous, SGLang HTTP, supervisor hub) sit at fixed offsets
from its SSH port (`launch_ports`): torch's TCPStore listens on every address and the labs
of a machine share one network namespace, so labs must differ by port, not by address.

Node i is `node<i>` at `<net>.<i>:<port>`: its own mount + UTS namespace (see
nodeinit.py), bind mounts over /opt/intel, /opt/xpufleet, /var/lib/xpufleet, /models
(its own), /opt/intel/oneapi and /etc/OpenCL/vendors (read-only, shared by the lab),
/var/lib/dpkg/status, /etc/hosts and root's ~/.bashrc (shared files), a simulated
/sys/class/drm and /sys/module/<driver>, and a per-node bin dir first on sshd's PATH.

This module is the lab's API and its life cycle (up, down, status, inject, heal); the
concerns live beside it: layout.py (what a node is made of on disk), processes.py
(finding, starting and killing a node's processes by namespace), sshd.py (keys, known
hosts, each node's sshd), firewall.py and fabric.py (DROP rules, fabric NICs) and
faults.py (one on/off handler per fault, declared with its profile entry), stale.py
(what a lab killed without `down` left on the net, removed by the next `up`).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..config import PROJECT_ROOT, LabSettings
from ..errors import InputError
from ..host import Host
from ..transport import SSHOptions
from . import bastion, fabric, firewall, layout, pybase, shaping, sshd, stale, upstream_sglang
from . import model as labmodel
from .faults import FAULTS, initial_faults, reconcile, set_fault
from .paths import Under
from .processes import (
    START_TIMEOUT,
    holder_name,
    kill_all,
    kill_nodes,
    node_processes,
    ns_inode,
    pid_alive,
    port_open,
    read_pid,
    start_nodes,
    wait_for,
)
from .profile import (
    LAUNCH_PORT_OFFSETS,
    Fault,
    LabError,
    NodeSpec,
    Profile,
    load_profile,
)
from .slurm import LabSlurm, render_slurm_inventory
from .vllmenv import ray_temp_dir

DEFAULT_DIR = LabSettings.dir
DEFAULT_NET = LabSettings.net
DEFAULT_PORT = LabSettings.port
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
    #: what `up` removed of killed labs on this net before starting (stale.py)
    removed: list[str] = field(default_factory=list)

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
            "removed": self.removed,
        }


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
        #: generated shared files already written by this object (release/spec -> path;
        #: layout.py fills it)
        self.made: dict[str, Path] = {}

    @classmethod
    def from_env(cls, lab_dir: str | None = None) -> Lab:
        """The lab the settings name: XPUFLEET_LAB_DIR/NET/PORT over `lab_dir` (the
        `lab_dir` setting) over the defaults (config.LabSettings)."""
        settings = LabSettings.from_env(lab_dir=lab_dir)
        return cls(settings.dir, settings.net, settings.port)

    def __repr__(self) -> str:
        return f"Lab({str(self.dir)!r}, net={self.net!r}, port={self.port})"

    # -- paths and names ----------------------------------------------------------------
    key_file = Under("dir", "id_ed25519")
    known_hosts = Under("dir", "known_hosts")
    authorized_keys = Under("dir", "authorized_keys")
    inventory_path = Under("dir", "inventory.yaml")
    state_path = Under("dir", "state.json")
    #: the `plugin: slurm` inventory of the lab (written while its Slurm runs)
    slurm_inventory_path = Under("dir", "inventory-slurm.yaml")
    #: files every node of this lab mounts (read-only where nodes must not write)
    shared = Under("dir", "shared")

    @property
    def slurm(self) -> LabSlurm:
        """The lab's own Slurm (`up(slurm=True)` starts it; see slurm.py)."""
        return LabSlurm(self)

    @property
    def tag(self) -> str:
        """Names this lab in iptables comments, so `down` removes exactly its own rules."""
        return "xpufleet-lab:" + hashlib.sha1(str(self.dir).encode()).hexdigest()[:10]

    def node_address(self, index: int) -> str:
        return f"{self.net}.{index}"

    def launch_ports(self) -> dict[str, int]:
        """This lab's rendezvous, SGLang HTTP and supervisor ports (inventory variables)."""
        return {name: self.port + offset for name, offset in LAUNCH_PORT_OFFSETS.items()}

    def fault_port(self, param: int | str) -> int:
        """A `blocked_port` parameter: a port number or one of `launch_ports()`'s names."""
        return self.launch_ports()[param] if isinstance(param, str) else int(param)

    def private_address(self, index: int) -> str | None:
        """Node<index>'s address behind the bastion (None when NET leaves no room)."""
        try:
            return f"{bastion.private_net(self.net)}.{index}"
        except (InputError, IndexError, ValueError):
            return None

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

    def node_dir(self, index: int) -> Path:
        return self.dir / "nodes" / f"node{index}"

    def holder_name(self, index: int) -> str:
        return holder_name(self.dir, index)

    def hosts(self, count: int | None = None) -> list[Host]:
        """Host objects of the running lab's nodes (without going through an inventory)."""
        if count is None:
            count = len(self.read_state().get("nodes", {}))
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
        top = 65535 - max(LAUNCH_PORT_OFFSETS.values())
        if not 1024 <= self.port <= top:
            raise InputError(
                f"lab SSH port must be 1024-{top} (its launch ports are port + "
                f"{', '.join(map(str, LAUNCH_PORT_OFFSETS.values()))}), got {self.port}",
                key="port",
            )
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

    def read_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self.state_path)

    # -- starting nodes -----------------------------------------------------------------
    def _start_nodes(self, specs: dict[int, NodeSpec]) -> dict[int, dict[str, Any]]:
        """Start nodes in parallel (with their start-time faults); index -> {holder, mnt, uts}."""
        for target in layout.HOST_MOUNT_POINTS:
            Path(target).mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        spec_files = {}
        for i, spec in sorted(specs.items()):
            node = self.node_dir(i)
            (node / "sshd.pid").unlink(missing_ok=True)
            (node / "node.log").write_text("")
            faults = initial_faults(spec)
            spec_files[i] = layout.node_spec_file(self, i, spec, faults, "dead_node" not in faults)
        answers = start_nodes({i: self.node_dir(i) for i in specs}, spec_files)
        errors = [f"node{i}: {answer}" for i, answer in answers.items() if isinstance(answer, str)]
        started = {i: answer for i, answer in answers.items() if not isinstance(answer, str)}

        def sshd_up(i: int) -> bool:
            return read_pid(self.node_dir(i) / "sshd.pid") is not None

        waiting = [i for i in started if not specs[i].fault("dead_node")]
        wait_for(lambda: all(sshd_up(i) for i in waiting), START_TIMEOUT)
        for i in sorted(i for i in waiting if not sshd_up(i)):
            tail = (self.node_dir(i) / "node.log").read_text(errors="replace")[-400:]
            errors.append(f"node{i}: sshd did not come up: {tail.strip()}")
        if errors:
            kill_nodes(self.dir, set(specs))
            raise LabError("lab nodes failed to start: " + "; ".join(errors))
        return started

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
            self.made.clear()  # files may have been changed by hand since the last call
            state = self.read_state()
            if state and (state.get("net"), state.get("port")) != (self.net, self.port):
                self._down_locked()
                state = {}
            had_slurm = bool(state.get("slurm"))
            running = node_processes(self.dir)
            # a killed lab's leftovers on this net go first (all of them if none of this
            # lab's nodes can be kept; see stale.py)
            fresh = not (set(running) & {int(k) for k in state.get("nodes", {})})
            others = stale.other_labs(self)
            removed = stale.remove(self, others, fresh=fresh)
            if fresh and running:  # this directory's, not in its state (deleted with it?)
                names = ", ".join(f"node{i}" for i in sorted(running))
                killed = kill_nodes(self.dir, set(running))
                removed.insert(0, f"{killed} processes of {names} of an earlier lab in {self.dir}")
                running = {}
            sshd.ensure_keys(self, count)
            layout.render_shared(self, count)
            old_nodes: dict[str, Any] = state.get("nodes", {})
            extra = {i for i in running if i > count} | {
                int(k) for k in old_nodes if int(k) > count
            }
            if extra:
                kill_nodes(self.dir, extra)
                firewall.remove_rules(self, extra)
                for i in extra:
                    layout.wipe_node(self, i)
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
                    and ns_inode(old["holder"]) == old.get("mnt")
                    and old.get("hardware") == spec.hardware_hash()
                )
                if healthy:
                    assert old is not None
                    state["nodes"][str(i)] = old
                    layout.render_node(self, i, spec, old.get("faults", {}))
                    keep.append(i)
                    continue
                layout.render_node(self, i, spec, initial_faults(spec))
                to_start.append(i)
            if set(to_start) & set(running):
                kill_nodes(self.dir, set(to_start) & set(running))
            if to_start:
                firewall.remove_rules(self, set(to_start))
            started = self._start_nodes({i: prof.node(i) for i in to_start})
            for i, result in started.items():
                spec = prof.node(i)
                state["nodes"][str(i)] = {
                    "holder": result["holder"],
                    "mnt": result["mnt"],
                    "uts": result["uts"],
                    "hardware": spec.hardware_hash(),
                    "spec": spec.hardware(),
                    "faults": initial_faults(spec),
                }
            self.write_state(state)
            for i in keep:
                spec = prof.node(i)
                entry = state["nodes"][str(i)]
                faults = entry.get("faults", {})
                pid = read_pid(self.node_dir(i) / "sshd.pid")
                if "dead_node" not in faults and not pid_alive(pid):
                    sshd.start(self, i, entry["holder"])
            for i in sorted(set(keep) | set(started)):
                spec = prof.node(i)
                before = dict(state["nodes"][str(i)].get("faults", {}))
                if i in started:
                    for fault in spec.faults:
                        if fault.name not in before:
                            set_fault(self, i, fault.name, fault.param, True, state, spec)
                else:
                    reconcile(self, i, spec, state)
                if state["nodes"][str(i)].get("faults", {}) != before:
                    self.write_state(state)
            self._install_models(count, state)
            fabric.up(self, count, shared=stale.shared_nics(self, others))
            sshd.write_known_hosts(self, count)
            self.inventory_path.write_text(
                render_inventory(self, [prof.node(i) for i in range(1, count + 1)], env)
            )
            if had_slurm if slurm is None else slurm:
                self._slurm_up(state, env)
            elif had_slurm or slurm is False:
                self.slurm.down()
                self.slurm_inventory_path.unlink(missing_ok=True)
            status = self.status()
            status.removed = removed
            return status

    def stop_slurm(self) -> int:
        """Stop the lab's Slurm, keep its nodes (a later `up` does not restart it)."""
        with self._locked():
            killed = self.slurm.down()
            state = self.read_state()
            if state.pop("slurm", None) is not None:
                self.write_state(state)
            self.slurm_inventory_path.unlink(missing_ok=True)
            return killed

    def _slurm_up(self, state: dict[str, Any], env: pybase.BaseEnv) -> None:
        """Converge the lab's Slurm to the running nodes (dead nodes get no slurmd)."""
        nodes = state["nodes"]
        holders = {int(i): entry["holder"] for i, entry in nodes.items()}
        dead = {int(i) for i, entry in nodes.items() if "dead_node" in entry.get("faults", {})}
        self.slurm.up(holders, dead=dead)
        state["slurm"] = True
        self.write_state(state)
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

    def down(self) -> int:
        """Stop every node of this lab; returns how many processes were killed."""
        self.validate()
        if not self.dir.is_dir():  # nothing to lock; still stop nodes found by name
            killed = self.slurm.down() + kill_nodes(self.dir)
            self._down_shared()
            return killed
        with self._locked():
            return self._down_locked()

    def _down_locked(self) -> int:
        with contextlib.suppress(OSError):
            shaping.remove(self)  # bandwidth caps of a benchmark that was killed
        killed = self.slurm.down()
        self.slurm_inventory_path.unlink(missing_ok=True)
        killed += kill_nodes(self.dir)
        self._down_shared()
        nodes = self.dir / "nodes"
        if nodes.is_dir():
            for entry in nodes.iterdir():
                match = re.match(r"^node(\d+)$", entry.name)
                if match:
                    layout.wipe_node(self, int(match.group(1)))
        self.state_path.unlink(missing_ok=True)
        for ray_dir in glob.glob(str(ray_temp_dir(self.net))):  # Ray's session dirs
            shutil.rmtree(ray_dir, ignore_errors=True)
        return killed

    def _down_shared(self) -> None:
        """The bastion, firewall rules and fabric NICs; the net's NICs and accounts stay
        while another lab runs on the net (they are named after the net)."""
        others = [other for other in stale.other_labs(self) if other.on_net(self)]
        kill_all(stale.stray_bastions(self))  # on this lab's address and port, pid file gone
        bastion.down(self, accounts=not others)
        firewall.remove_rules(self)
        fabric.down(self, shared={index for other in others for index in other.nodes})

    def status(self) -> LabStatus:
        """Per node: up (sshd answers) / down (namespace alive, sshd not) / gone."""
        state = self.read_state()
        status = LabStatus(str(self.dir), self.net, self.port)
        running = node_processes(self.dir)
        known = {int(k) for k in state.get("nodes", {})}
        for i in sorted(known):
            entry = state["nodes"][str(i)]
            holder = entry.get("holder")
            node_ok = i in running and pid_alive(holder) and ns_inode(holder) == entry.get("mnt")
            sshd = read_pid(self.node_dir(i) / "sshd.pid")
            sshd_ok = node_ok and pid_alive(sshd) and ns_inode(sshd) == entry.get("mnt")
            address = self.node_address(i)
            if sshd_ok and port_open(address, self.port):
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
        return sorted(node_processes(self.dir).get(self._index(node), []))

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
        value = FAULTS[fault].default if param is None else param
        with self._locked():
            state = self.read_state()
            if str(index) not in state.get("nodes", {}):
                raise LabError(f"node{index} is not part of the running lab")
            spec = self._spec_for(index, state)
            current = state["nodes"][str(index)].get("faults", {})
            if fault in current and current[fault] != value:
                set_fault(self, index, fault, current[fault], False, state, spec)
            if current.get(fault, object()) != value:
                set_fault(self, index, fault, value, True, state, spec)
            self.write_state(state)

    def heal(self, node: int | str, fault: str) -> None:
        """Undo a fault on node (no-op if the node does not have it)."""
        index = self._index(node)
        if fault not in FAULTS:
            raise InputError(f"unknown fault {fault!r} (known: {', '.join(FAULTS)})", key="fault")
        with self._locked():
            state = self.read_state()
            entry = state.get("nodes", {}).get(str(index))
            if entry is None or fault not in entry.get("faults", {}):
                return
            spec = self._spec_for(index, state)
            set_fault(self, index, fault, entry["faults"][fault], False, state, spec)
            self.write_state(state)

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
                # this lab's own: other labs on the machine may be launching too
                **lab.launch_ports(),
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
