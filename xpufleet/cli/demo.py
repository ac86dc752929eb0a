"""`invoke demo`: the tour `make demo` gives on the lab, each step a real task run."""

from __future__ import annotations

import sys
from typing import Any

from invoke import task

from .common import console, exits

#: the steps, as a user would type them (after `make demo` the same commands work by hand)
STEPS: list[tuple[str, list[str]]] = [
    ("bring up the lab cluster (simulated Intel Max 1550 nodes)", ["lab.up"]),
    ("fan-out: one command on every node", ["run", "hostname; cat /opt/intel/.lab/node.json"]),
    ("validate every node and the cluster", ["doctor"]),
    ("provision the nodes (second run must be all ok)", ["provision"]),
    ("provision again: idempotent", ["provision"]),
    ("launch SGLang (the lab's stand-in) with tensor parallelism 8", ["launch", "--tp", "8"]),
    ("status of every rank", ["status"]),
]


def _invoke(c: Any, args: list[str], *, warn: bool = False) -> int:
    from ..shell import join

    result = c.run(join([sys.executable, "-m", "invoke", *args]), warn=True, pty=False)
    if result.exited and not warn:
        console.print(f"[bold red]demo step failed:[/] invoke {' '.join(args)} ({result.exited})")
    return int(result.exited)


@task
@exits
def demo(c: Any) -> int:
    """Lab tour: lab.up -> run -> doctor -> provision (twice) -> launch --tp 8 -> chat -> stop."""
    for title, args in STEPS:
        console.rule(f"[bold]{title}[/]  (invoke {' '.join(args)})")
        code = _invoke(c, args)
        if code and args[0] not in ("doctor",):
            _invoke(c, ["stop"], warn=True)
            return code
    console.rule("[bold]one chat request through the OpenAI-compatible API[/]")
    code = _invoke(c, ["chat", "Hello from xpufleet"])
    console.rule("[bold]stop every rank[/]")
    stop_code = _invoke(c, ["stop"])
    console.print("The lab is still up: try `invoke doctor`, `invoke launch --tp 8`, `invoke lab.down`.")
    return code or stop_code


TASKS = [demo]
