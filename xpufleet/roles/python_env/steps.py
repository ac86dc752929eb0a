"""Role python_env: the env and its inherited site-packages (its packages: role wheels)."""

from __future__ import annotations

from xpufleet import shell
from xpufleet.provision.roles import RoleContext
from xpufleet.provision.steps import Command, Skip, Step
from xpufleet.variables import venv_python

_PURELIB = "import sysconfig; print(sysconfig.get_path('purelib'))"


def create_env(role: RoleContext) -> Command:
    v = role.vars
    venv, python = str(v["venv"]), str(v["python"])
    if v["python_env"] == "conda":
        conda = f"{str(v['conda_root']).rstrip('/')}/bin/conda"
        command = shell.join(
            [conda, "create", "-y", "-q", "-p", venv, f"python={v['conda_python']}"]
        )
        action = f"create conda env {venv} (python {v['conda_python']})"
    else:
        command = shell.join([python, "-m", "venv", venv])
        action = f"create venv {venv} with {python}"
    return Command(
        role.id("env"),
        role.tags("env"),
        reprobe=True,
        guard=f"test -x {shell.quote(venv_python(venv))}",
        command=command,
        action=action,
        present=f"{v['python_env']} {venv}",
    )


def base_pth(role: RoleContext) -> Step:
    """A .pth file in the env's site-packages listing base_site_packages (shared torch)."""
    v = role.vars
    dirs = [str(d) for d in v["base_site_packages"] or []]
    if not dirs:
        return Skip(role.id("base_site_packages"), role.tags("env"), reason="no base_site_packages")
    py = shell.quote(venv_python(str(v["venv"])))
    name = shell.quote(str(v["base_pth_name"]))
    content = "\n".join(dirs)
    site = f'sp=$({py} -c {shell.quote(_PURELIB)}) && [ -n "$sp" ]'
    return Command(
        role.id("base_site_packages"),
        role.tags("env"),
        reprobe=True,
        guard=f'{site} && [ "$(cat "$sp"/{name})" = {shell.quote(content)} ]',
        command=f'{site} && cat > "$sp"/{name}',
        stdin=(content + "\n").encode(),
        action=f"write {v['base_pth_name']}: inherit {', '.join(dirs)}",
        present=f"inherits {', '.join(dirs)}",
    )


def conda_packages(role: RoleContext) -> list[Step]:
    v = role.vars
    wanted = [str(p) for p in v["conda_packages"] or []]
    if not wanted:
        return []
    if v["python_env"] != "conda":
        return [
            Skip(
                role.id("conda_packages"),
                role.tags("packages"),
                reason=f"conda-only package(s) {', '.join(wanted)} skipped: python_env is venv "
                "(a venv uses its interpreter's own sqlite3; no conda equivalent)",
            )
        ]
    conda = f"{str(v['conda_root']).rstrip('/')}/bin/conda"
    out: list[Step] = []
    for spec in wanted:
        name, _, version = spec.partition("=")
        guard = shell.join([conda, "list", "-p", str(v["venv"]), f"^{name}$"])
        check = (
            f" | grep -q {shell.quote(' ' + version + ' ')}"
            if version
            else f" | grep -q {shell.quote(name)}"
        )
        out.append(
            Command(
                role.id(f"conda.{name}"),
                role.tags("packages"),
                reprobe=True,
                guard=guard + check,
                command=shell.join([conda, "install", "-y", "-q", "-p", str(v["venv"]), spec]),
                action=f"conda install {spec}",
                present=f"conda {spec}",
            )
        )
    return out


def steps(role: RoleContext) -> list[Step]:
    return [
        create_env(role),
        base_pth(role),
        *conda_packages(role),
    ]
