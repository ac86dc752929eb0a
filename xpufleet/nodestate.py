"""A node's record of what provision installed: `<state_dir>/wheels.json`, with its one
reader, used by provision (is a wheel ok?), doctor's facts and bench."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

NODE_STATE_NAME = "wheels.json"
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
