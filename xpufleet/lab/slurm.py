"""A real Slurm for the lab: munged, slurmctld and one slurmd inside each lab node.

    slurm = LabSlurm(lab)
    slurm.up(holders)        # {node index: holder pid}; idempotent, ~1-2 s from cold
    slurm.env()              # {"SLURM_CONF": ...}: give it to every client (srun, salloc)
    slurm.down()             # every daemon, step and task of this lab's Slurm is gone

Debian's Slurm 22.05 packages, unmodified. Each slurmd is started with nsenter inside
its node's mount + UTS namespaces, so its tasks see the node's hostname, its own
/opt/intel and its simulated /sys, exactly as an SSH session on that node does; a
TaskProlog gives tasks the environment the node's sshd gives sessions (PATH with the
node's simulated tools first, libfaketime for clock skew), read from the node's
sshd_config so the two cannot drift apart.

Everything lives under `<lab dir>/slurm/`: munge key and socket (the socket's folder
mode 755, as munged demands), slurm.conf, controller state, spool, logs. Addresses and
ports derive from the lab's own: the controller listens on `<net>.254`, port
`<lab port> + 1000`; node i's slurmd on port `<lab port> + 1000 + i`. slurmd binds every
address (CommunicationParameters=NoInAddrAny breaks srun inside batch jobs), so two
labs differ by their ports, as their SSH ports already do.

Daemons are found by their command line (it names this lab's slurm.conf or munge
socket), so `down` works after a crash and never touches another lab's Slurm.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from . import pybase
from .paths import Under
from .profile import LabError

if TYPE_CHECKING:
    from .cluster import Lab

#: the Debian packages the lab's Slurm needs (the Makefile's APT_PACKAGES has them)
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
MUNGED = "/usr/sbin/munged"
PORT_OFFSET = 1000
CONTROLLER_HOST = 254
PARTITION = "lab"
#: CPUs each lab node declares (config_overrides: Slurm believes the file, not the box)
NODE_CPUS = 16
START_TIMEOUT = 60.0
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def available() -> bool:
    """Whether the Slurm and munge daemons are installed (`make setup` installs them)."""
    return all(Path(p).exists() for p in (SLURMCTLD, SLURMD, MUNGED)) and bool(shutil.which("srun"))


@dataclass(frozen=True)
class SlurmLayout:
    """Where one lab's Slurm keeps its files and which addresses and ports it uses."""

    root: Path
    net: str
    lab_port: int

    conf = Under("root", "slurm.conf")
    munge_dir = Under("root", "munge")
    munge_key = Under("root", "munge", "munge.key")
    munge_socket = Under("root", "munge", "munge.socket")
    task_prolog = Under("root", "task_prolog.sh")

    @property
    def controller_address(self) -> str:
        return f"{self.net}.{CONTROLLER_HOST}"

    @property
    def controller_port(self) -> int:
        return self.lab_port + PORT_OFFSET

    def node_port(self, index: int) -> int:
        return self.lab_port + PORT_OFFSET + index


def slurm_conf(layout: SlurmLayout, count: int, nodes_dir: Path) -> str:
    """The lab's slurm.conf for `count` nodes (pure: a unit test reads it)."""
    root = layout.root
    names = f"node[1-{count}]" if count > 1 else "node1"
    addresses = f"{layout.net}.[1-{count}]" if count > 1 else f"{layout.net}.1"
    first, last = layout.node_port(1), layout.node_port(count)
    ports = f"[{first}-{last}]" if count > 1 else str(first)
    lines = [
        "# slurm.conf of an xpufleet lab (written by `invoke lab.up --slurm`; do not edit)",
        "ClusterName=xpufleetlab",
        f"SlurmctldHost=localhost({layout.controller_address})",
        f"SlurmctldPort={layout.controller_port}",
        f"SlurmdPort={first}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={layout.munge_socket}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool/%n",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd-%n.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd-%n.log",
        f"PlugStackConfig={root}/plugstack.conf",
        # no cgroups in the lab: processes are tracked by parentage, tasks not confined
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        f"TaskProlog={layout.task_prolog}",
        # the nodes' declared CPUs and memory are believed, not measured
        "SlurmdParameters=config_overrides",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        # SIGTERM -> SIGKILL after 2 s when a step ends (srun -K, scancel)
        "KillWait=2",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "MinJobAge=60",
        f"NodeName={names} NodeHostname={names} NodeAddr={addresses} Port={ports} "
        f"CPUs={NODE_CPUS} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    del nodes_dir  # the TaskProlog names the nodes' files; kept for the signature's reader
    return "\n".join(lines) + "\n"


def task_prolog(nodes_dir: Path) -> str:
    """Gives a task the environment its node's sshd gives a session (SetEnv line)."""
    return (
        "#!/bin/sh\n"
        "# xpufleet lab: a task's environment is what the node's sshd sets (its SetEnv).\n"
        f'conf="{nodes_dir}/$SLURMD_NODENAME/sshd_config"\n'
        '[ -r "$conf" ] || exit 0\n'
        "sed -n 's/^SetEnv //p' \"$conf\" | tr ' ' '\\n' | sed 's/^/export /'\n"
    )


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


class LabSlurm:
    """The Slurm of one lab (its daemons, files, addresses)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.layout = SlurmLayout(lab.dir / "slurm", lab.net, lab.port)

    @property
    def conf(self) -> Path:
        return self.layout.conf

    def env(self) -> dict[str, str]:
        """What a Slurm client of this lab needs in its environment."""
        return {"SLURM_CONF": str(self.conf)}

    def client_env(self) -> dict[str, str]:
        return {**os.environ, **self.env()}

    # -- processes ------------------------------------------------------------------------
    def daemons(self) -> dict[int, str]:
        """pid -> kind ('munged', 'slurmctld', 'slurmd') of this lab's Slurm daemons."""
        conf, socket = str(self.conf), str(self.layout.munge_socket)
        found: dict[int, str] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            argv = _cmdline(int(entry.name))
            if not argv:
                continue
            name = os.path.basename(argv[0])
            if name == "munged" and f"--socket={socket}" in argv:
                found[int(entry.name)] = "munged"
            elif name in ("slurmctld", "slurmd") and conf in argv:
                found[int(entry.name)] = name
        return found

    def _steps(self, daemons: dict[int, str]) -> list[int]:
        """slurmstepd processes of this lab (children of its slurmds) and their tasks."""
        parents: dict[int, int] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                ppid = _ppid(int(entry.name))
                if ppid is not None:
                    parents[int(entry.name)] = ppid
        slurmds = {pid for pid, kind in daemons.items() if kind == "slurmd"}
        stepds = {
            pid
            for pid in parents
            if _cmdline(pid)[:1] and os.path.basename(_cmdline(pid)[0]).startswith("slurmstepd")
        }
        # a slurmstepd double-forks away from slurmd: it is ours if its spool dir is
        spool = str(self.layout.root / "spool")
        ours = set()
        for pid in stepds:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/cwd").startswith(spool):
                    ours.add(pid)
            if parents.get(pid) in slurmds:
                ours.add(pid)
        below = set(ours)
        changed = True
        while changed:
            changed = False
            for pid, ppid in parents.items():
                if ppid in below and pid not in below:
                    below.add(pid)
                    changed = True
        return sorted(below)

    def running(self) -> bool:
        return bool(self.daemons())

    # -- up / down ------------------------------------------------------------------------
    def up(self, holders: dict[int, int], *, dead: set[int] | frozenset[int] = frozenset()) -> None:
        """Converge to a Slurm of exactly these nodes ({index: holder pid}), all idle but
        the `dead` ones (a dead lab node runs nothing, so no slurmd either)."""
        if not available():
            raise LabError(
                "Slurm is not installed: run `make setup` (apt: " + " ".join(PACKAGES) + ")"
            )
        count = len(holders)
        if sorted(holders) != list(range(1, count + 1)):
            raise LabError(f"Slurm needs nodes 1..{count}, got {sorted(holders)}")
        layout = self.layout
        text = slurm_conf(layout, count, self.lab.dir / "nodes")
        changed = not layout.conf.exists() or layout.conf.read_text() != text
        daemons = self.daemons()
        kinds = set(daemons.values())
        if changed or not {"munged", "slurmctld"} <= kinds:
            self._stop(daemons)
            daemons = {}
        self._write_files(text)
        if "munged" not in daemons.values():
            self._start_munged()
        if "slurmctld" not in daemons.values():
            self._clear_state()
            self._run([SLURMCTLD, "-c", "-i", "-f", str(layout.conf)], "slurmctld")
        running_nodes = self._slurmd_nodes(daemons)
        for index, holder in sorted(holders.items()):
            if index not in running_nodes and index not in dead:
                self.start_node(index, holder)
        self._wait_idle({f"node{i}" for i in holders if i not in dead})

    def _write_files(self, conf_text: str) -> None:
        layout = self.layout
        for sub in ("state", "spool", "log"):
            (layout.root / sub).mkdir(parents=True, exist_ok=True)
        layout.munge_dir.mkdir(parents=True, exist_ok=True)
        layout.munge_dir.chmod(0o755)  # munged refuses a socket folder others may write
        if not layout.munge_key.exists():
            layout.munge_key.write_bytes(secrets.token_bytes(1024))
        layout.munge_key.chmod(0o600)
        (layout.root / "plugstack.conf").write_text("")
        layout.task_prolog.write_text(task_prolog(self.lab.dir / "nodes"))
        layout.task_prolog.chmod(0o755)
        if not layout.conf.exists() or layout.conf.read_text() != conf_text:
            layout.conf.write_text(conf_text)

    def _clear_state(self) -> None:
        for sub in ("state", "spool"):
            shutil.rmtree(self.layout.root / sub, ignore_errors=True)
            (self.layout.root / sub).mkdir(parents=True)

    def _run(self, argv: list[str], what: str) -> None:
        """Start a daemon that forks into the background; its errors name its log."""
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={"PATH": CLEAN_PATH, **self.env()},
            cwd="/",
            timeout=START_TIMEOUT,
        )
        if proc.returncode != 0:
            raise LabError(
                f"{what} did not start (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()[-400:]}; logs in {self.layout.root}/log"
            )

    def _start_munged(self) -> None:
        layout = self.layout
        self._run(
            [
                MUNGED,
                f"--socket={layout.munge_socket}",
                f"--key-file={layout.munge_key}",
                f"--pid-file={layout.munge_dir}/munged.pid",
                f"--seed-file={layout.munge_dir}/munged.seed",
                f"--log-file={layout.root}/log/munged.log",
                "--force",
            ],
            "munged",
        )

    def start_node(self, index: int, holder: int) -> None:
        """slurmd inside node<index>'s own mount and UTS namespaces (its name, its files)."""
        name = f"node{index}"
        self._run(
            ["nsenter", f"--target={holder}", "--mount", "--uts", "--",
             SLURMD, "-f", str(self.conf), "-N", name],
            f"slurmd of {name}",
        )  # fmt: skip

    def _slurmd_nodes(self, daemons: dict[int, str]) -> set[int]:
        nodes = set()
        for pid, kind in daemons.items():
            argv = _cmdline(pid)
            if kind == "slurmd" and "-N" in argv:
                match = re.match(r"^node(\d+)$", argv[argv.index("-N") + 1])
                if match:
                    nodes.add(int(match.group(1)))
        return nodes

    def node_states(self) -> dict[str, str]:
        """node name -> Slurm state (idle, alloc, down*, ...) as sinfo reports it."""
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"],
            capture_output=True,
            text=True,
            env=self.client_env(),
            timeout=30,
        )
        if proc.returncode != 0:
            return {}
        states = {}
        for line in proc.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2:
                states[parts[0]] = parts[1]
        return states

    def _wait_idle(self, wanted: set[str]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self.node_states()
            ready = {n for n, s in states.items() if s.rstrip("*~#") in ("idle", "mix", "alloc")}
            if wanted <= ready and not any(states[n].endswith("*") for n in wanted):
                return
            time.sleep(0.05)
        raise LabError(
            f"lab Slurm nodes did not become idle: {states or 'no answer from slurmctld'}; "
            f"logs in {self.layout.root}/log"
        )

    def down(self) -> int:
        """Stop this lab's Slurm: daemons, steps and their tasks; returns how many died."""
        return self._stop(self.daemons())

    def _stop(self, daemons: dict[int, str]) -> int:
        from .processes import pid_alive

        victims = set(daemons) | set(self._steps(daemons))
        killed: set[int] = set()
        deadline = time.monotonic() + 10.0
        while victims:
            for pid in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            killed |= victims
            time.sleep(0.02)
            victims = {p for p in victims if pid_alive(p)}
            again = self.daemons()
            victims |= set(again) | set(self._steps(again))
            if time.monotonic() > deadline:
                raise LabError(f"lab Slurm processes would not die: {sorted(victims)}")
        for name in ("slurmctld.pid", "munge/munged.pid"):
            (self.layout.root / name).unlink(missing_ok=True)
        return len(killed)


def render_slurm_inventory(lab: Lab, env: pybase.BaseEnv) -> str:
    """The lab's `plugin: slurm` inventory: hosts from the allocation it is used in."""
    from .cluster import LAB_SIZED_VARS

    doc = {
        "plugin": "slurm",
        "slurm_conf": str(LabSlurm(lab).conf),
        "group": "gpu_nodes",
        # nodes share one network namespace: each serves HTTP on its own address only
        "compose": {"ansible_host": "slurm_node_addr", "sglang_host": "slurm_node_addr"},
        "vars": {
            "connector": "slurm",
            "nic": "lo",
            "python": str(env.python),
            "base_site_packages": [str(env.site_packages)],
            **LAB_SIZED_VARS,
            **lab.launch_ports(),  # this lab's own, as in its SSH inventory
        },
    }
    header = (
        f"# Slurm inventory of the xpufleet lab in {lab.dir}: its hosts are the nodes of\n"
        "# the Slurm allocation it is used in (salloc -N2 invoke doctor -H THIS_FILE).\n"
        "# Written by `invoke lab.up --slurm`.\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None)
