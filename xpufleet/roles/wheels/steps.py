"""Role wheels: the closed environment of files/wheels/manifest.json.

The lock first (every dependency, offline from the pushed wheelhouse, hash-checked,
nothing else left in the venv), then one step per built wheel in dependency order,
then `pip check` and the imports launch will do, in launch's environment.
"""

from __future__ import annotations

import json

from xpufleet.nodestate import node_lock_path
from xpufleet.provision.closed import LockedEnv, imports_check, pip_check
from xpufleet.provision.roles import RoleContext
from xpufleet.provision.steps import File, Skip, Step
from xpufleet.provision.wheels import Wheel
from xpufleet.variables import venv_python


def lock_file(role: RoleContext) -> File:
    """The node's copy of the lock: what it must hold, and which module comes from where."""
    manifest = role.manifest
    doc = {
        "format": 1,
        "packages": {d.key: {"version": d.version, "sha256": d.sha256} for d in manifest.locked},
        "wheels": {w.key: {"version": w.version, "sha256": w.sha256} for w in manifest.wheels},
        "modules": manifest.module_map(),
    }
    content = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()
    path = node_lock_path(str(role.vars["state_dir"]))
    return File(role.id("lock_file"), role.tags("lock"), path=path, content=content, mode=0o644)


def steps(role: RoleContext) -> list[Step]:
    v = role.vars
    manifest = role.manifest
    if not manifest.wheels and not manifest.locked:
        return [
            Skip(
                role.id("manifest"),
                role.tags(),
                reason=f"no wheels in {manifest.path} (run `invoke build`)",
            )
        ]
    python = venv_python(str(v["venv"]))
    cache = str(v["wheel_cache_dir"])
    out: list[Step] = [role.directory("cache_dir", cache, 0o755), lock_file(role)]
    out.append(
        LockedEnv(
            role.id("lock"),
            role.tags("lock"),
            python=python,
            lock=list(manifest.locked),
            keep=frozenset(w.key for w in manifest.wheels),
            wheelhouse=manifest.directory,
            cache_dir=cache,
            push=str(v.get("wheel_push") or "relay"),
        )
    )
    for entry in manifest.ordered():
        out.append(
            Wheel(
                role.id(entry.key),
                role.tags(entry.key),
                entry=entry,
                local_path=manifest.wheel_path(entry),
                python=python,
                state_dir=str(v["state_dir"]),
                cache_dir=cache,
                push=str(v.get("wheel_push") or "relay"),
                env_file=str(v["oneapi_env_file"]),
            )
        )
    state_dir = str(v["state_dir"])
    out.append(pip_check(python, state_dir, role.id("pip_check"), role.tags("check")))
    modules = [str(m) for m in v["python_imports"] or []]
    if modules:
        out.append(
            imports_check(
                python,
                modules,
                str(v["oneapi_env_file"]),
                state_dir,
                role.id("imports"),
                role.tags("check"),
            )
        )
    return out
