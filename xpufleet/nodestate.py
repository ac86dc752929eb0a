"""A node's record of what provision installed: `<state_dir>/wheels.json`, with its one
reader (provision: is a wheel ok?, doctor's facts, bench) and its one writer.

The node runs this very module: provision sends its source ahead of the script that
verifies a wheel and records it (`node_script`), so the writer the tests check is the
one production runs. Hence: standard library only, no xpufleet imports.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass

NODE_STATE_NAME = "wheels.json"
NODE_STATE_FORMAT = 1
#: each node's copy of the lock it was provisioned with (doctor maps modules to it)
NODE_LOCK_NAME = "lock.json"


def normalize(name: str) -> str:
    """PEP 503 name: `Py_CPUinfo` -> `py-cpuinfo`."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class InstalledWheel:
    """What provision installed (and verified by import) on a node."""

    name: str
    version: str
    sha256: str
    filename: str = ""
    python: str = ""
    installed_at: str = ""


def node_state_path(state_dir: str) -> str:
    return f"{state_dir.rstrip('/')}/{NODE_STATE_NAME}"


def node_lock_path(state_dir: str) -> str:
    return f"{state_dir.rstrip('/')}/{NODE_LOCK_NAME}"


def parse_node_state(text: str) -> dict[str, InstalledWheel]:
    """A node's wheels.json content -> {normalized name: InstalledWheel}; unreadable -> {}.

    A corrupt file is treated as "nothing known installed": provision then re-verifies
    and rewrites it, which is the safe direction.
    """
    try:
        doc = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    wheels = doc.get("wheels", {}) if isinstance(doc, dict) else {}
    found: dict[str, InstalledWheel] = {}
    if not isinstance(wheels, dict):
        return found
    for name, item in wheels.items():
        if not isinstance(item, dict):
            continue
        found[normalize(name)] = InstalledWheel(
            name=normalize(name),
            version=str(item.get("version", "")),
            sha256=str(item.get("sha256", "")),
            filename=str(item.get("filename", "")),
            python=str(item.get("python", "")),
            installed_at=str(item.get("installed_at", "")),
        )
    return found


def render_node_state(installed: dict[str, InstalledWheel]) -> str:
    """The content of a wheels.json that records `installed` (the one writer's format)."""
    wheels = {}
    for key in sorted(installed):
        item = asdict(installed[key])
        item.pop("name")
        wheels[key] = item
    doc = {"format": NODE_STATE_FORMAT, "wheels": wheels}
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def record_installed(path: str, wheel: InstalledWheel) -> None:
    """Add (or replace) one wheel's record in the wheels.json at `path`, atomically (on
    the node, after the wheel was installed and verified)."""
    try:
        with open(path) as fh:
            installed = parse_node_state(fh.read())
    except OSError:
        installed = {}
    installed[normalize(wheel.name)] = wheel
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(render_node_state(installed))
    os.replace(tmp, path)


def node_script(body: str) -> str:
    """`body` (Python run on a node) with this module's definitions ahead of it."""
    with open(__file__) as fh:
        return fh.read() + "\n" + body
