"""`invoke lab.up|lab.down|lab.status`: the embedded lab cluster (xpufleet.lab).

Which lab: the `lab_dir` setting (invoke.yaml, default .lab), address prefix 127.0.1
and port 22022; the environment variables XPUFLEET_LAB_DIR, XPUFLEET_LAB_NET and
XPUFLEET_LAB_PORT override them (tests and parallel developers use their own lab).
"""

from __future__ import annotations

import json as jsonlib
import sys
import time
from pathlib import Path
from typing import Any

from invoke import task
from rich.table import Table

from ..errors import InputError
from ..lab.cluster import Lab, LabStatus
from ..lab.profile import PROFILES_DIR
from .common import console, exits, relative, settings_from

STATE_STYLE = {"up": "green", "down": "bold red", "gone": "bold magenta"}


def _lab(c: Any) -> Lab:
    return Lab.from_env(settings_from(c).lab_dir)


def _profile_path(profile: str | None) -> Path | None:
    """A profile file, or the name of a packaged one (`default`, `faults`)."""
    if not profile:
        return None
    path = Path(profile)
    packaged = PROFILES_DIR / f"{profile}.yaml"
    if not path.exists() and "/" not in profile and packaged.exists():
        return packaged
    return path


def _print_status(status: LabStatus, *, as_json: bool) -> None:
    if as_json:
        jsonlib.dump(status.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if not status.running:
        console.print(f"no lab: down ({relative(Path(status.lab_dir))})")
        return
    table = Table(
        title=f"lab {relative(Path(status.lab_dir))} ({status.net}.x:{status.port})",
        title_justify="left",
    )
    for column in ("node", "state", "address", "pid", "faults"):
        table.add_column(column)
    for node in status.nodes:
        style = STATE_STYLE.get(node.state, "")
        table.add_row(
            node.name,
            f"[{style}]{node.state}[/]",
            f"{node.address}:{node.port}",
            str(node.sshd or node.holder or "-"),
            ", ".join(node.faults) or "-",
        )
    for orphan in status.orphans:
        table.add_row(orphan, "[bold magenta]orphan[/]", "-", "-", "not in state; run lab.down")
    console.print(table)


@task(
    help={
        "nodes": "number of nodes (default: the profile's count, 4 for the default profile)",
        "profile": "lab profile YAML (hardware and faults per node); `faults` names the "
        "packaged profile with one fault per node",
        "json": "machine-readable status on stdout",
        "slurm": "also run a real Slurm (munged, slurmctld, a slurmd in each node) and write "
        "its `plugin: slurm` inventory; a later lab.up keeps it, lab.down stops it",
        "bastion": "also a login node: compute nodes reachable only through it on private "
        "addresses, accounts with and without sudo; writes inventory-bastion.yaml",
    }
)
@exits
def up(
    c: Any,
    nodes: str | None = None,
    profile: str | None = None,
    json: bool = False,
    slurm: bool = False,
    bastion: bool = False,
) -> int:
    """Start the lab cluster, or converge a running one to the nodes and profile asked for."""
    count = None
    if nodes is not None:
        if not str(nodes).isdigit():
            raise InputError(f"--nodes must be a number, got {nodes!r}", key="nodes")
        count = int(nodes)
    lab = _lab(c)
    started = time.monotonic()
    status = lab.up(nodes=count, profile=_profile_path(profile), slurm=True if slurm else None)
    if bastion:
        lab.bastion_up()
    elapsed = time.monotonic() - started
    for line in status.removed if not json else ():
        console.print(f"lab up: removed, left by a lab killed without lab.down: {line}")
    _print_status(status, as_json=json)
    if not json:
        console.print(
            f"lab up: {len(status.nodes)} nodes in {elapsed:.1f}s; "
            f"inventory: {relative(lab.inventory_path)}"
        )
        if bastion:
            path = lab.dir / "inventory-bastion.yaml"
            console.print(
                f"lab bastion: inventory {relative(path)} (sudo account, ansible_become); "
                f"XPUFLEET_BECOME_PASSWORD=$(cat {relative(lab.dir / 'become_password')})"
            )
        if lab.slurm_inventory_path.exists():
            console.print(
                f"lab Slurm: SLURM_CONF={relative(lab.slurm.conf)}; "
                f"inventory: {relative(lab.slurm_inventory_path)}"
            )
    expected_down = {n.name for n in status.nodes if "dead_node" in n.faults}
    wrong = [n.name for n in status.nodes if (n.state == "up") == (n.name in expected_down)]
    return 1 if wrong else 0


@task(help={"json": "machine-readable result on stdout"})
@exits
def down(c: Any, json: bool = False) -> int:
    """Stop every node of the lab: no process, mount, namespace or firewall rule is left."""
    lab = _lab(c)
    killed = lab.down()
    if json:
        jsonlib.dump({"lab_dir": str(lab.dir), "processes_stopped": killed}, sys.stdout)
        sys.stdout.write("\n")
    elif killed:
        console.print(f"lab down: {killed} processes stopped ({relative(lab.dir)})")
    else:
        console.print(f"lab down: no lab was running ({relative(lab.dir)})")
    return 0


@task(help={"json": "machine-readable status on stdout"})
@exits
def status(c: Any, json: bool = False) -> int:
    """Per node: up/down, address, pid and faults; exit 0 only if every node is up."""
    lab_status = _lab(c).status()
    _print_status(lab_status, as_json=json)
    return 0 if lab_status.all_up else 1
