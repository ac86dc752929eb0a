"""Role oneapi: the oneAPI tree must be there; write the env file that sources it."""

from __future__ import annotations

from xpufleet import shell
from xpufleet.provision.roles import RoleContext
from xpufleet.provision.steps import Check, Decision, Step
from xpufleet.results import FAILED, OK


def tree_probe(root: str) -> str:
    """Layout and component versions of a oneAPI tree (one line each)."""
    r = shell.quote(root)
    return (
        f'r={r}; if [ -f "$r/setvars.sh" ]; then echo layout component; '
        'elif ls "$r"/20*/oneapi-vars.sh >/dev/null 2>&1; then echo layout unified; '
        "else echo layout absent; fi; "
        'for c in compiler ccl mpi; do v=$(readlink "$r/$c/latest" 2>/dev/null); '
        'echo "$c ${v##*/}"; done; '
        'for u in "$r"/20*/oneapi-vars.sh; do [ -f "$u" ] && echo "unified ${u%/*}"; done'
    )


def evaluate_tree(root: str, state: str) -> Decision:
    """ok with the versions found, or failed naming what is missing (pure)."""
    facts: dict[str, str] = {}
    unified: list[str] = []
    for line in state.strip().splitlines():
        key, _, value = line.partition(" ")
        if key == "unified":
            unified.append(value.rsplit("/", 1)[-1])
        else:
            facts[key] = value.strip()
    layout = facts.get("layout", "absent")
    if layout == "absent":
        return Decision(
            FAILED,
            f"no oneAPI at {root}: neither setvars.sh nor <version>/oneapi-vars.sh "
            "(install the oneAPI Base Toolkit there or set oneapi_root)",
        )
    parts = [f"{c} {facts[c]}" for c in ("compiler", "ccl", "mpi") if facts.get(c)]
    if unified:
        parts.insert(0, f"release {sorted(unified)[-1]}")
    found = ", ".join(parts) or "no component versions"
    return Decision(OK, f"oneAPI at {root} ({layout} layout: {found})")


def steps(role: RoleContext) -> list[Step]:
    v = role.vars
    root = str(v["oneapi_root"])
    env_file = str(v["oneapi_env_file"])
    return [
        Check(
            role.id("tree"),
            role.tags("check"),
            script=tree_probe(root),
            evaluate=lambda state: evaluate_tree(root, state),
        ),
        role.directory("env_dir", env_file.rsplit("/", 1)[0]),
        role.template("env_file", "oneapi.sh.j2", env_file),
    ]
