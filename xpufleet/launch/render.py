"""What a launch ships to each node: the run directory's files, rendered from the plan.

Pure (no SSH): the per-launch script (Jinja2, every value shell-quoted), `run.json` for
the node's supervisor and preflight, and one tar archive holding them plus the two
standalone node scripts, so a node's run directory is written in one round trip.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from .. import shell
from ..errors import PlanError
from ..host import Host
from ..provision.lock import lock_path
from .engines import get_engine
from .plan import LaunchPlan, NodePlan

TEMPLATES = Path(__file__).resolve().parent / "templates"
REMOTE = Path(__file__).resolve().parent / "remote"
SCRIPT = "launch.sh"
#: in the run dir: one JSON line per process the engine's server started (preflight.py)
SPAWN_RECORD = "spawned.jsonl"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: how the supervisors keep each other honest (seconds)
HEARTBEAT_S = 1.0
PEER_TIMEOUT_S = 10.0
HUB_CONNECT_TIMEOUT_S = 30.0
#: SIGTERM, then SIGKILL after this many seconds
GRACE_S = 3.0


@dataclass(frozen=True)
class RunPaths:
    """Where one launch lives on a node."""

    state_dir: str
    run_id: str

    @property
    def runs(self) -> str:
        return f"{self.state_dir.rstrip('/')}/runs"

    @property
    def dir(self) -> str:
        return f"{self.runs}/{self.run_id}"

    @property
    def current(self) -> str:
        return f"{self.runs}/current"


def new_run_id(now: float | None = None) -> str:
    """Sortable and unique enough: UTC time plus a few random hex digits."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(2)}"


def env_file(host: Host) -> str:
    """The environment file `invoke provision` (role sglang's `sglang_env_file`) writes."""
    return str(host.var.values["sglang_env_file"])


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["q"] = shell.quote
    env.filters["argv"] = shell.join
    return env


def render_launch_script(plan: LaunchPlan, node: NodePlan, run_id: str, env_path: str) -> str:
    """The per-launch script (the engine's template): provision's environment, the plan's
    env, then the engine's preflight and command lines."""
    for name in [*node.env, *node.server_env]:
        if not _ENV_NAME.match(name):
            raise PlanError(f"not an environment variable name: {name!r}", key="ccl_env")
    template = _environment().get_template(get_engine(plan.engine).template)
    run_dir = RunPaths(node.state_dir, run_id).dir
    return template.render(plan=plan, node=node, run_id=run_id, env_file=env_path, run_dir=run_dir)


def node_config(plan: LaunchPlan, node: NodePlan, run_id: str) -> dict[str, Any]:
    """`run.json`: what the node's supervisor and preflight need to know, the engine's
    process patterns included (the supervisor is a standalone script)."""
    engine = get_engine(plan.engine)
    hub_address = plan.rendezvous_address
    ports = engine.ports(plan, node)
    if node.node_rank == 0:
        ports += [{"address": hub_address, "port": plan.supervisor_port, "what": "supervisor hub"}]
    return {
        "run_id": run_id,
        "host": node.host,
        "node_rank": node.node_rank,
        "nnodes": plan.nnodes,
        "hosts": [n.host for n in plan.nodes],
        "ranks": [r.rank for r in node.ranks],
        # the card `xpu-smi ps` must show each rank's process on
        "rank_devices": [{"rank": r.rank, "device": r.device, "card": r.card} for r in node.ranks],
        # where the preflight wrapper records the processes the engine starts (preflight.py)
        "spawn_record": SPAWN_RECORD if engine.patterns.spawned_rank[0] else None,
        "hub": {"address": hub_address, "port": plan.supervisor_port},
        "engine": {
            "name": engine.name,
            "patterns": engine.patterns.to_json(),
            "stop_argv": engine.stop_argv(node),
        },
        "server": {
            "script": SCRIPT,
            "log": engine.log_file,
            "name": engine.server_name(node.node_rank),
            "http_host": node.http_host,
            "http_port": node.http_port,
        },
        "lock_path": lock_path(node.state_dir),  # provision's lock: the supervisor holds it
        "ports": ports,
        "grace_s": GRACE_S,
        "abort_grace_s": GRACE_S if engine.abort_grace_s is None else engine.abort_grace_s,
        "heartbeat_s": HEARTBEAT_S,
        "peer_timeout_s": PEER_TIMEOUT_S,
        "hub_connect_timeout_s": HUB_CONNECT_TIMEOUT_S,
        "preflight": engine.preflight_config(plan, node),
    }


def _add(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = int(time.time())
    tar.addfile(info, io.BytesIO(data))


def bundle(plan: LaunchPlan, node: NodePlan, run_id: str, env_path: str) -> bytes:
    """A tar archive of the node's run directory (written with `tar -xf - -C DIR`)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        config = json.dumps(node_config(plan, node, run_id), indent=1).encode()
        _add(tar, "run.json", config)
        _add(tar, "plan.json", json.dumps(plan.to_json(), indent=1).encode())
        _add(tar, SCRIPT, render_launch_script(plan, node, run_id, env_path).encode(), 0o755)
        for name in ("supervisor.py", *get_engine(plan.engine).node_scripts):
            _add(tar, name, (REMOTE / name).read_bytes(), 0o755)
    return out.getvalue()
