"""The lab's faults: each declared once, with its profile entry (default parameter, what
the parameter means) and the one handler that turns it on or off at the OS level.

    @fault("clock_skew", 300, "seconds the node's clock is ahead", at_start=True)
    def _clock_skew(node: FaultTarget) -> None: ...

Declaration order is the order faults are applied in. `at_start` faults are part of how
a node starts (its files, its sshd): a node started with one has it from the first
moment; the others are applied to the running node.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from . import firewall, layout, sshd
from . import model as labmodel
from .processes import kill_nodes, node_processes, ns_inode, nsenter, pid_alive
from .profile import LabError

if TYPE_CHECKING:
    from .cluster import Lab
    from .profile import NodeSpec


@dataclass
class FaultTarget:
    """One node while a fault is turned on or off: what a handler may touch."""

    lab: Lab
    index: int
    spec: NodeSpec
    #: the node's holder pid: its namespaces live as long as it does
    holder: int
    #: the node's faults after this change (a handler reads its own parameter here)
    faults: dict[str, Any]
    #: the lab's state (the Slurm flag)
    state: dict[str, Any]
    name: str
    on: bool
    param: Any

    @property
    def root(self) -> Path:
        """The node's file system as the host sees it."""
        return Path(f"/proc/{self.holder}/root")

    @property
    def model_copy(self) -> Path:
        return self.lab.node_dir(self.index) / "fs" / "models" / labmodel.LAB_MODEL

    def render(self) -> None:
        """Rewrite the node's own files for its current faults."""
        layout.render_node(self.lab, self.index, self.spec, self.faults)


Handler = Callable[[FaultTarget], None]


class FaultKind(NamedTuple):
    default: Any
    help: str
    handler: Handler
    at_start: bool = False


#: fault name -> its declaration, in the order faults are applied
FAULTS: dict[str, FaultKind] = {}


def fault(name: str, default: Any, help: str, *, at_start: bool = False) -> Callable:
    """Declare a fault: its profile entry and its on/off handler (the decorated function)."""

    def register(handler: Handler) -> Handler:
        FAULTS[name] = FaultKind(default, help, handler, at_start)
        return handler

    return register


def rerender(node: FaultTarget) -> None:
    node.render()


@fault("no_driver", None, "no GPU kernel driver: no drm cards, no /sys/module/<driver>")
def _no_driver(node: FaultTarget) -> None:
    node.render()  # torch.json: no XPU without a driver
    layout.set_driver(node.root, node.index, node.spec, present=not node.on)


@fault("old_oneapi", "2023.2", "oneAPI release installed instead of the profile's", at_start=True)
def _old_oneapi(node: FaultTarget) -> None:
    release = str(node.param) if node.on else node.spec.oneapi
    source = layout.oneapi_dir(node.lab, release)
    nsenter(node.holder, "umount", "-l", layout.ONEAPI_MOUNT)
    nsenter(node.holder, "mount", "--bind", "-o", "ro", str(source), layout.ONEAPI_MOUNT)


fault("missing_xpu_smi", None, "xpu-smi is not on the node's PATH", at_start=True)(rerender)
fault("torch_no_xccl", None, "torch.distributed.is_xccl_available() is False", at_start=True)(
    rerender
)


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


@fault("full_disk", "1M", "size of the full tmpfs mounted over /models")
def _full_disk(node: FaultTarget) -> None:
    if not node.on:
        nsenter(node.holder, "umount", "-l", "/models")
        return
    nsenter(node.holder, "mount", "-t", "tmpfs", "-o", f"size={node.param},mode=0755",
            "xpufleet-lab-full", "/models")  # fmt: skip
    _fill(node.root / "models", node.lab.node_dir(node.index) / "fs" / "models")


@fault("clock_skew", 300, "seconds the node's clock is ahead (negative: behind)", at_start=True)
def _clock_skew(node: FaultTarget) -> None:
    node.render()  # sshd's SetEnv: every process started through ssh sees the skew
    if "dead_node" not in node.faults:
        sshd.stop(node.lab, node.index)
        sshd.start(node.lab, node.index, node.holder)


@fault(
    "blocked_port",
    "rendezvous_port",
    "TCP port dropped by iptables on the node's addresses: a number or one of the lab's "
    "launch ports (rendezvous_port, sglang_port, supervisor_port)",
)
def _blocked_port(node: FaultTarget) -> None:
    if node.on:
        firewall.block_port(node.lab, node.index, node.lab.fault_port(node.param))
    else:
        firewall.remove_rules(node.lab, {node.index}, chain="INPUT")


@fault(
    "blocked_egress",
    "rendezvous_port",
    "TCP port the node's processes cannot connect to, on any address (iptables OUTPUT, "
    "matched by the node's cgroup): a number or one of the lab's launch ports",
)
def _blocked_egress(node: FaultTarget) -> None:
    if node.on:
        pids = node_processes(node.lab.dir).get(node.index, [])
        firewall.block_egress(node.lab, node.index, node.lab.fault_port(node.param), pids)
    else:
        firewall.remove_rules(node.lab, {node.index}, chain="OUTPUT")


@fault("dead_node", None, "sshd and every process of the node stopped", at_start=True)
def _dead_node(node: FaultTarget) -> None:
    if node.on:
        kill_nodes(node.lab.dir, {node.index}, keep_holder=True)
        (node.lab.node_dir(node.index) / "sshd.pid").unlink(missing_ok=True)
        return
    sshd.start(node.lab, node.index, node.holder)
    if node.state.get("slurm"):
        node.lab.slurm.start_node(node.index, node.holder)


def _model(node: FaultTarget) -> None:
    """A broken shard of the node's copy of the lab model; off: the pristine copy again."""
    if node.on:
        labmodel.break_model(node.model_copy, node.name, int(node.param))
    else:
        labmodel.install(node.lab.model_source, node.model_copy)


fault("model_missing_shard", 2, "this shard of the lab model is missing on the node")(_model)
fault("model_short_shard", 2, "this shard of the lab model is truncated to half its size")(_model)
fault("model_other_shard", 2, "this shard is another revision: same size, other bytes")(_model)


# the stand-in SGLang's departures from the fork (lab/layout.py ENGINE_FAULTS, read by
# the stand-in's srt/utils.py `lab_fault`): a launcher that assumes the fork's happy path
# (schedulers in rank order, each on the device SGLang gives it) is caught
fault(
    "scheduler_spawn_order",
    "reverse",
    "the stand-in SGLang starts its schedulers in this order (reverse), not in rank order",
)(rerender)
fault(
    "scheduler_device_shift",
    2,
    "the stand-in's schedulers select the device this many indices past SGLang's gpu_id",
)(rerender)


def initial_faults(spec: NodeSpec) -> dict[str, Any]:
    """The node's faults that are part of how it starts (its files and its sshd)."""
    return {f.name: f.param for f in spec.faults if FAULTS[f.name].at_start}


def holder_of(index: int, state: dict[str, Any]) -> int:
    entry = state.get("nodes", {}).get(str(index))
    holder = entry.get("holder") if entry else None
    if not entry or not pid_alive(holder) or ns_inode(holder) != entry.get("mnt"):
        raise LabError(f"node{index} is not running (run `invoke lab.up`)")
    return int(holder)


def set_fault(
    lab: Lab, index: int, name: str, param: Any, on: bool, state: dict[str, Any], spec: NodeSpec
) -> None:
    """Make the OS of node<index> show (or stop showing) one fault; `state` records it."""
    entry = state["nodes"][str(index)]
    holder = holder_of(index, state)
    faults: dict[str, Any] = entry.setdefault("faults", {})
    if on:
        faults[name] = param
    else:
        faults.pop(name, None)
    FAULTS[name].handler(FaultTarget(lab, index, spec, holder, faults, state, name, on, param))


def reconcile(lab: Lab, index: int, spec: NodeSpec, state: dict[str, Any]) -> None:
    """Bring a running node's faults to what its spec asks for."""
    entry = state["nodes"][str(index)]
    current: dict[str, Any] = dict(entry.get("faults", {}))
    wanted = {f.name: f.param for f in spec.faults}
    for name, param in current.items():
        if name not in wanted or wanted[name] != param:
            set_fault(lab, index, name, param, False, state, spec)
    current = dict(entry.get("faults", {}))
    for name in [n for n in FAULTS if n in wanted and n not in current]:
        set_fault(lab, index, name, wanted[name], True, state, spec)
