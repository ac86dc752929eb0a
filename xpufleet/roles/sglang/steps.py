"""Role sglang: the node's environment file, secrets file (0600) and launch script."""

from __future__ import annotations

import re

from xpufleet.errors import InputError
from xpufleet.provision.roles import RoleContext
from xpufleet.provision.steps import Step

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def steps(role: RoleContext) -> list[Step]:
    v = role.vars
    for name in list(v["ccl_env"] or {}) + list(v["secret_env"] or []):
        if not _ENV_NAME.match(str(name)):
            raise InputError(
                f"not an environment variable name: {name!r} (host {role.host.name})",
                key="ccl_env" if name in (v["ccl_env"] or {}) else "secret_env",
            )
    env_file = str(v["sglang_env_file"])
    script = str(v["sglang_launch_script"])
    out: list[Step] = [
        role.directory("env_dir", env_file.rsplit("/", 1)[0]),
        role.directory("bin_dir", script.rsplit("/", 1)[0]),
        role.template("env_file", "sglang.sh.j2", env_file),
    ]
    if v["secret_env"]:
        secrets = {name: role.secrets[name] for name in v["secret_env"]}
        out.append(
            role.template(
                "secrets",
                "secrets.sh.j2",
                str(v["secrets_env_file"]),
                secret=True,
                secrets=secrets,
            )
        )
    out.append(role.template("launch_script", "sglang-server.sh.j2", script, mode=0o755))
    return out
