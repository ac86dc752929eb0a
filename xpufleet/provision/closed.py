"""The closed environment on a node: exactly the lock, offline, hash-checked, then verified.

`LockedEnv` makes the venv hold exactly the manifest's lock (see wheelhouse.py): a
locked distribution that is missing or at another version is pushed (only when the
node's wheel cache lacks that sha256) and installed with `pip install --no-index
--require-hashes --no-deps` from the cache; a distribution in the venv's own
site-packages that neither the lock nor the built wheels name (a CUDA torch someone
pip-installed, its nvidia-* friends) is uninstalled, so what the base environment
provides shows through again. `PipCheck` then fails on any broken requirement, naming
the packages; `Imports` imports what the engine loads at start in launch's environment
(oneAPI sourced, the venv's interpreter) and names the first missing module and the
distribution that provides it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import shell
from ..errors import CommandFailed
from ..facts.python_env import describe_import_failure
from ..results import CHANGED, FAILED, OK
from .manifest import LockedDist
from .steps import Check, Decision, Step, python_snippet
from .transfer import push_file
from .wheelhouse import BOOTSTRAP

if TYPE_CHECKING:
    from .engine import ApplyContext

#: on the node: distributions visible to the env (first on sys.path wins) and those in
#: the env's own site-packages; the wheel cache's files with their sizes
_ENV_PY = r"""
import json, os, re, sys, sysconfig, importlib.metadata as m
own_dirs = {os.path.realpath(sysconfig.get_path(k)) for k in ("purelib", "platlib")}
seen, own = {}, {}
for d in m.distributions():
    key = re.sub(r"[-_.]+", "-", d.metadata.get("Name") or "").lower()
    if not key:
        continue
    where = os.path.realpath(str(d.locate_file("")))
    if where in own_dirs:
        own.setdefault(key, d.version)
    seen.setdefault(key, d.version)
cache = {}
try:
    for f in os.listdir(sys.argv[1]):
        if f.endswith(".whl"):
            cache[f] = os.path.getsize(os.path.join(sys.argv[1], f))
except OSError:
    pass
print(json.dumps({"seen": seen, "own": own, "cache": cache}))
"""

REQUIREMENTS_NAME = "xpufleet-lock.txt"


@dataclass(frozen=True)
class EnvDiff:
    """What the venv lacks (or has at another version) and what it has beyond the lock."""

    install: list[LockedDist]
    remove: list[str]
    found: dict[str, str]

    @property
    def empty(self) -> bool:
        return not self.install and not self.remove


def env_diff(state: str, lock: list[LockedDist], keep: frozenset[str]) -> EnvDiff | None:
    """Compare a node's probed env with the lock (pure); None when unreadable."""
    try:
        doc = json.loads(state.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return None
    seen = doc.get("seen") or {}
    own = doc.get("own") or {}
    locked = {d.key for d in lock}
    install = [d for d in lock if seen.get(d.key) != d.version]
    remove = sorted(k for k in own if k not in locked and k not in keep and k not in BOOTSTRAP)
    return EnvDiff(install, remove, seen)


@dataclass
class LockedEnv(Step):
    """The venv holds exactly the lock (plus the built wheels, installed after it)."""

    python: str = ""
    lock: list[LockedDist] = field(default_factory=list)
    #: built wheels (installed by their own steps): never removed here
    keep: frozenset[str] = frozenset()
    wheelhouse: Path = field(default_factory=Path)
    cache_dir: str = ""
    #: "relay" (the lock's wheels go through the relay like the built ones) or "direct"
    push: str = "relay"
    reprobe: bool = True

    def probe(self) -> str:
        return python_snippet(self.python, _ENV_PY, [self.cache_dir], absent="nopython")

    def _push(self, ctx: ApplyContext, missing: list[LockedDist], cache: str) -> tuple[int, str]:
        """The wheels this node's cache lacks: one relay for every host that lacks some of
        them at once (each writes only its own), else directly. -> (bytes sent, route)."""
        total = sum(d.size for d in missing)
        with ctx.transfer(f"{len(missing)} locked wheel(s)", total) as advance:

            def direct() -> int:
                return sum(
                    push_file(
                        ctx.session,
                        self.wheelhouse / d.filename,
                        cache,
                        name=d.filename,
                        sha256=d.sha256,
                        progress=advance,
                    )
                    for d in missing
                )

            if self.push == "relay" and ctx.relay and hasattr(ctx.session, "open_channel"):
                files = [(self.wheelhouse / d.filename, d.filename) for d in missing]
                sent, route = ctx.relay.push(
                    ctx.session, files, cache, direct, group=f"lock {self.wheelhouse}",
                    progress=advance,
                )  # fmt: skip
                return sent, f", {route}"
            return direct(), ""

    def decide(self, state: str, *, diff: bool = False) -> Decision:
        if state.strip() == "nopython":
            return Decision(CHANGED, f"install the {len(self.lock)} locked package(s) (no env yet)")
        found = env_diff(state, self.lock, self.keep)
        if found is None:
            return Decision(FAILED, f"cannot read the environment: {state.strip()[-200:]}")
        if found.empty:
            return Decision(OK, f"{len(self.lock)} locked package(s) installed, nothing else")
        parts = []
        if found.install:
            shown = ", ".join(
                f"{d.name} {d.version}"
                + (f" (has {found.found[d.key]})" if d.key in found.found else "")
                for d in found.install
            )
            parts.append(f"install {shown}")
        if found.remove:
            parts.append(f"remove {', '.join(found.remove)} (not in the lock)")
        return Decision(CHANGED, "; ".join(parts))

    def apply(self, ctx: ApplyContext) -> str:
        found = env_diff(ctx.state, self.lock, self.keep)
        todo = list(self.lock) if found is None else found.install
        remove = [] if found is None else found.remove
        q = shell.quote
        cache = self.cache_dir.rstrip("/")
        pip = [self.python, "-m", "pip", "--no-input", "--disable-pip-version-check"]
        if remove:
            ctx.run(shell.join([*pip, "uninstall", "-y", *remove]) + " >/dev/null")
        sent, route = 0, ""
        if todo:
            have = ctx.run(
                f"cd {q(cache)} && sha256sum -- "
                + " ".join(q(d.filename) for d in todo)
                + " 2>/dev/null; true"
            ).stdout
            hashes = {
                line.split()[1].lstrip("*"): line.split()[0]
                for line in have.splitlines()
                if len(line.split()) == 2
            }
            missing = [d for d in todo if hashes.get(d.filename) != d.sha256]
            for dist in missing:
                if not (self.wheelhouse / dist.filename).is_file():
                    raise CommandFailed(
                        ctx.session.host.name,
                        "push",
                        2,
                        f"{self.wheelhouse / dist.filename} is in the lock but missing on the "
                        "control node: run `invoke build`",
                    )
            if missing:
                sent, route = self._push(ctx, missing, cache)
            ctx.bytes_sent += sent
            requirements = "".join(f"{d.requirement}\n" for d in todo)
            listed = f"{cache}/{REQUIREMENTS_NAME}"
            ctx.run(f"cat > {q(listed)}", stdin=requirements)
            install = [*pip, "install", "--no-index", "--find-links", cache, "--require-hashes"]
            install += ["--no-deps", "-r", listed]
            ctx.run(shell.join(install) + " >/dev/null")
        done = []
        if todo:
            done.append(
                f"installed {len(todo)} (pushed {sent / 1e6:.1f} MB{route}, hashes checked)"
            )
        if remove:
            done.append(f"removed {', '.join(remove)}")
        return "; ".join(done)


VERIFIED = "@@XPUFLEET-VERIFIED@@"
#: what a verification depends on: every distribution the env sees, where it lies
_FINGERPRINT_PY = (
    "import importlib.metadata as m\n"
    "for d in sorted(m.distributions(), key=lambda d: str(d.locate_file(''))):\n"
    "    print(d.metadata.get('Name'), d.version, d.locate_file(''))\n"
)


def verified_once(python: str, stamp: str, check: str, inputs: list[str]) -> str:
    """Shell: run `check` unless the env (and `inputs` files) are exactly as when it last
    passed. A pass records the fingerprint in `stamp`, so a no-op provision does not pay
    for `pip check` and the imports again; any install, removal or changed input reruns
    them. (Doctor always imports.)"""
    py, st = shell.quote(python), shell.quote(stamp)
    # never a bare `cat`: the probe script itself arrives on stdin
    files = "".join(f"cat {shell.quote(f)} 2>/dev/null; " for f in inputs)
    fingerprint = (
        f"fp=$( {{ {py} -c {shell.quote(_FINGERPRINT_PY)}; {files}}} </dev/null "
        "| sha256sum | cut -c1-64 )"
    )
    return (
        f"if [ ! -x {py} ]; then echo nopython; else {fingerprint}; "
        f'if [ "$(cat {st} 2>/dev/null)" = "$fp" ]; then echo {VERIFIED}; else '
        f"out=$( {check} 2>&1 ); rc=$?; "
        f'if [ $rc -eq 0 ]; then mkdir -p "$(dirname {st})" && echo "$fp" > {st}; '
        f"else rm -f {st}; fi; "
        "printf '%s\n' \"$out\"; fi; fi"
    )


def pip_check(python: str, state_dir: str, step_id: str, tags: frozenset[str]) -> Check:
    """`pip check` after install: any broken requirement fails the step, named."""
    check = f"{shell.quote(python)} -m pip check --disable-pip-version-check"
    stamp = f"{state_dir.rstrip('/')}/verified-pip-check"
    script = verified_once(python, stamp, check, [])

    def evaluate(state: str) -> Decision:
        text = state.strip()
        if text == "nopython":
            return Decision(FAILED, "no environment to check")
        if VERIFIED in text:
            return Decision(OK, "pip check: passed, environment unchanged since")
        if "No broken requirements found" in text:
            return Decision(OK, "pip check: no broken requirements")
        problems = [ln for ln in text.splitlines() if ln.strip()][:6]
        return Decision(FAILED, "pip check: " + "; ".join(problems))

    return Check(step_id, tags, script=script, evaluate=evaluate)


def imports_check(
    python: str,
    modules: list[str],
    env_file: str,
    state_dir: str,
    step_id: str,
    tags: frozenset[str],
) -> Check:
    """Import what launch will, in launch's environment; name the first missing module."""
    from ..facts.probe import IMPORTS_PROBE
    from ..nodestate import node_lock_path

    lock_file = node_lock_path(state_dir)
    args = json.dumps({"modules": modules, "lock": lock_file})
    run = shell.join([python, "-c", IMPORTS_PROBE.read_text(), args])
    env = shell.quote(env_file)
    check = f"( if [ -f {env} ]; then . {env} >/dev/null 2>&1; fi; {run} )"
    stamp = f"{state_dir.rstrip('/')}/verified-imports"
    inputs = [env_file, lock_file]
    script = verified_once(python, stamp, check, inputs)
    return Check(step_id, tags, script=script, evaluate=lambda s: imports_decision(s, modules))


def imports_decision(state: str, modules: list[str]) -> Decision:
    """Pure: the imports probe's output -> ok, or failed naming module and distribution."""
    if VERIFIED in state:
        return Decision(OK, f"imports {', '.join(modules)} (environment unchanged since)")
    marker = "@@XPUFLEET-IMPORTS@@"
    if marker not in state:
        return Decision(FAILED, f"the import check did not run: {state.strip()[-300:]}")
    try:
        result = json.loads(state.rsplit(marker, 1)[1].strip().splitlines()[0])
    except (json.JSONDecodeError, IndexError):
        return Decision(FAILED, f"unreadable import check output: {state.strip()[-300:]}")
    failed = (result.get("imports") or {}).get("failed")
    if failed:
        return Decision(FAILED, describe_import_failure(failed))
    return Decision(OK, f"imports {', '.join(modules)}")
