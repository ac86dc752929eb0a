"""`invoke demo`: the tour `make demo` gives on the lab, each step a real task run."""

from __future__ import annotations

import sys
from typing import Any

from invoke import task

from ..config import Settings
from ..provision.manifest import load_manifest
from ..shell import join
from .common import console, exits, settings_from

#: (title, invoke arguments): the tour stops at the first step that fails
Step = tuple[str, list[str]]

BEFORE_PROVISION: list[Step] = [
    ("bring up the lab cluster (simulated Intel Max 1550 nodes)", ["lab.up"]),
    ("fan-out: one command on every node", ["run", "hostname"]),
    ("validate every node before provisioning (environment checks skip)", ["doctor"]),
]
STAND_IN_BUILD: Step = (
    "build the SGLang stand-in wheel on node1 and fetch it into files/wheels/",
    ["build", "--host", "node1", "--recipe", "sglang-standin"],
)
AFTER_BUILD: list[Step] = [
    ("provision every node", ["provision"]),
    ("provision again: idempotent, nothing sent", ["provision"]),
    ("validate again: the whole stack now", ["doctor"]),
    (
        "launch SGLang (the lab's stand-in): --tp 8 across 4 nodes, 2 ranks each",
        ["launch", "--tp", "8", "--nnodes", "4"],
    ),
    ("status of every rank", ["status"]),
    ("one chat request through the OpenAI-compatible API", ["chat", "Hello from xpufleet"]),
]


def _invoke(c: Any, args: list[str]) -> int:
    result = c.run(join([sys.executable, "-m", "invoke", *args]), warn=True, pty=False)
    return int(result.exited)


def _has_standin_wheel(settings: Settings) -> bool:
    """The stand-in is built AND locked (offline nodes need the lock's wheels too)."""
    manifest = settings.path(settings.wheels_dir) / "manifest.json"
    if not manifest.exists():
        return False
    found = load_manifest(manifest)
    return bool(found.locked) and any(entry.name == "sglang" for entry in found.wheels)


@task
@exits
def demo(c: Any) -> int:
    """Lab tour: lab.up, run, doctor, build, provision x2, doctor, launch --tp 8, chat, stop."""
    settings = settings_from(c)
    steps = list(BEFORE_PROVISION)
    if not _has_standin_wheel(settings):
        steps.append(STAND_IN_BUILD)
    steps += AFTER_BUILD
    code = 0
    for title, args in steps:
        console.rule(f"[bold]{title}[/]  (invoke {' '.join(args)})")
        code = _invoke(c, args)
        if code:
            console.print(f"[bold red]demo stopped:[/] `invoke {' '.join(args)}` exited {code}")
            break
    console.rule("[bold]stop every rank[/]  (invoke stop)")
    stop_code = _invoke(c, ["stop"])
    console.print(
        "The lab stays up: try `invoke doctor`, `invoke launch --tp 8`, `invoke lab.down`."
    )
    return code or stop_code


TASKS = [demo]
