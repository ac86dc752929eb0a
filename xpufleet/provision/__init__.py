"""`invoke provision`: roles of idempotent steps applied to every node in parallel.

`run_provision` validates everything on the control node first (inventory-derived
variables, templates, secrets, the wheel manifest, tags: bad input exits 2 before any
host is touched), then hands one step list per host to the engine.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..host import Host
from ..results import TaskReport
from ..transport import SSHOptions
from .context import TransferFactory, no_progress
from .engine import ProvisionOptions, provision
from .manifest import MANIFEST_NAME, load_manifest
from .roles import (
    ROLE_ORDER,
    ROLES_DIR,
    known_tags,
    load_roles,
    parse_tags,
    plan_host,
    read_secrets,
    select_steps,
)
from .steps import Step
from .wheels import Wheel


def plan(
    hosts: list[Host],
    wheels_dir: Path,
    *,
    tags: str | None = None,
    skip_tags: str | None = None,
    roles_dir: Path = ROLES_DIR,
    environ: dict[str, str] | None = None,
) -> dict[str, tuple[Host, list[Step]]]:
    """Every host's selected steps (no SSH); raises InputError on any bad input."""
    manifest = load_manifest(wheels_dir / MANIFEST_NAME)
    roles = load_roles(ROLE_ORDER, roles_dir)
    wanted = {n for h in hosts for n in h.var.secret_env}
    secrets = read_secrets(sorted(wanted), environ)
    want_tags, skip = parse_tags(tags), parse_tags(skip_tags)
    plans: dict[str, tuple[Host, list[Step]]] = {}
    every_tag: set[str] = set()
    for host in hosts:
        steps = plan_host(host, roles, manifest, secrets=secrets)
        every_tag |= known_tags(steps)
        plans[host.name] = (host, steps)
    unknown = sorted((want_tags | skip) - every_tag)
    if unknown:
        raise InputError(
            f"unknown tag(s) {', '.join(unknown)}; known: {', '.join(sorted(every_tag))}",
            key="tags",
        )
    chosen = {
        name: (host, select_steps(steps, want_tags, skip)) for name, (host, steps) in plans.items()
    }
    for _, steps in chosen.values():
        for step in steps:
            if isinstance(step, Wheel) and not step.local_path.is_file():
                raise InputError(
                    f"{step.local_path} is listed but missing on the control node "
                    "(run `invoke build`)",
                    file=str(manifest.path),
                    key=step.id,
                )
    return chosen


def run_provision(
    hosts: list[Host],
    ssh_options: SSHOptions,
    wheels_dir: Path,
    *,
    forks: int,
    options: ProvisionOptions,
    tags: str | None = None,
    skip_tags: str | None = None,
    transfers: TransferFactory = no_progress,
) -> TaskReport:
    plans = plan(hosts, wheels_dir, tags=tags, skip_tags=skip_tags)
    return provision(plans, ssh_options, forks=forks, options=options, transfers=transfers)


__all__ = ["ProvisionOptions", "plan", "run_provision"]
