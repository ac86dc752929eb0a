"""Role wheels: one wheel step per manifest entry, in dependency order."""

from __future__ import annotations

from xpufleet.provision.roles import RoleContext
from xpufleet.provision.steps import Skip, Step
from xpufleet.provision.wheels import Wheel
from xpufleet.variables import venv_python


def steps(role: RoleContext) -> list[Step]:
    v = role.vars
    entries = role.manifest.ordered()
    if not entries:
        return [
            Skip(
                role.id("manifest"),
                role.tags(),
                reason=f"no wheels in {role.manifest.path} (run `invoke build`)",
            )
        ]
    python = venv_python(str(v["venv"]))
    out: list[Step] = [role.directory("cache_dir", str(v["wheel_cache_dir"]), 0o755)]
    for entry in entries:
        out.append(
            Wheel(
                role.id(entry.key),
                role.tags(entry.key),
                entry=entry,
                local_path=role.manifest.wheel_path(entry),
                python=python,
                state_dir=str(v["state_dir"]),
                cache_dir=str(v["wheel_cache_dir"]),
                push=str(v.get("wheel_push") or "relay"),
            )
        )
    return out
