"""The wheel step: push a built wheel only when the node lacks that exact sha256.

State = the node's `<state_dir>/wheels.json` entry (what provision installed and
verified) AND the version the environment really has (`importlib.metadata`): both
must match the manifest for `ok`. Otherwise: reuse a verified copy in the node's
wheel cache or stream the wheel there (temp name, size+sha256 checked on the node,
atomic rename), pip-install it (`--no-index --no-deps`: its dependencies are the
lock's, installed before), import it with oneAPI's environment sourced, check the
promised build features (torch: xccl), and only then record it in wheels.json. A cut
transfer never reaches pip.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

from .. import shell
from ..errors import CommandFailed, PipFailed
from ..nodestate import node_script, node_state_path, parse_node_state
from ..results import CHANGED, FAILED, OK
from .context import ApplyContext
from .manifest import FEATURE_CHECKS, WheelEntry
from .steps import Decision, Step, python_snippet
from .transfer import push_file

#: exit status of the install command when pip (not the import check after it) failed
EXIT_PIP = 97

_INSTALLED_PY = (
    "import sys, importlib.metadata as m\n"
    "try:\n"
    "    print(m.version(sys.argv[1]))\n"
    "except m.PackageNotFoundError:\n"
    "    print('none')\n"
)

#: runs on the node after pip: import, check version and features, then record (with
#: nodestate.py's writer, sent ahead of it)
_VERIFY_AND_RECORD_PY = node_script("""
import importlib, importlib.metadata as m, json, sys, time
spec = json.loads(sys.argv[1])
checks = json.loads(sys.argv[2])
try:
    importlib.import_module(spec["module"])
    version = m.version(spec["name"])
except Exception as exc:
    sys.exit(f"import {spec['module']} failed after install: {type(exc).__name__}: {exc}")
if version != spec["version"]:
    sys.exit(f"{spec['name']} reports version {version}, manifest says {spec['version']}")
for feature, expr in checks.items():
    try:
        good = bool(eval(expr))
    except Exception as exc:
        good = False
    if not good:
        sys.exit(f"{spec['name']} {version} lacks the build feature '{feature}' ({expr} is false)")
record_installed(spec["state_file"], InstalledWheel(
    spec["key"], version, spec["sha256"], spec["filename"], sys.executable,
    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
))
print(json.dumps({"version": version, "features": sorted(checks)}))
""")


@dataclass
class Wheel(Step):
    entry: WheelEntry | None = None
    local_path: Path = field(default_factory=Path)
    python: str = ""
    state_dir: str = ""
    cache_dir: str = ""
    #: "relay" (one copy for every node that needs it at once) or "direct"
    push: str = "relay"
    #: sourced before the import check (a source-built XPU torch needs oneAPI's libraries)
    env_file: str = ""
    reprobe: bool = True

    @property
    def _entry(self) -> WheelEntry:
        assert self.entry is not None
        return self.entry

    @property
    def state_file(self) -> str:
        return node_state_path(self.state_dir)

    def probe(self) -> str:
        return (
            f"printf 'recorded '; base64 -w0 < {shell.quote(self.state_file)} 2>/dev/null; echo; "
            "printf 'installed '; "
            + python_snippet(self.python, _INSTALLED_PY, [self._entry.key], absent="none")
        )

    def decide(self, state: str, *, diff: bool = False) -> Decision:
        entry = self._entry
        facts = dict((line.split(" ", 1) + [""])[:2] for line in state.strip().splitlines() if line)
        try:
            recorded_text = base64.b64decode(facts.get("recorded", "").strip()).decode()
        except ValueError:
            recorded_text = ""
        recorded = parse_node_state(recorded_text).get(entry.key)
        installed = facts.get("installed", "none").strip() or "none"
        label = f"{entry.key} {entry.version} (sha256 {entry.sha256[:12]})"
        if recorded and recorded.sha256 == entry.sha256 and installed == entry.version:
            return Decision(OK, f"{label} installed")
        if installed == "none":
            why = "not installed"
        elif installed != entry.version:
            why = f"node has {installed}"
        elif recorded is None:
            why = "installed by something else than provision (no wheels.json record)"
        elif recorded.sha256 != entry.sha256:
            why = f"node has sha256 {recorded.sha256[:12]}"
        else:
            why = "state differs"
        return Decision(CHANGED, f"push and install {label}: {why}")

    def apply(self, ctx: ApplyContext) -> str:
        entry = self._entry  # its file on the control node was checked by plan()
        cached = shell.quote(f"{self.cache_dir.rstrip('/')}/{entry.filename}")
        have = ctx.run(f"sha256sum {cached} 2>/dev/null | cut -c1-64; true").stdout.strip()
        how = "cached copy"
        if have != entry.sha256:
            with ctx.transfer(f"{entry.key} {entry.version}", entry.size) as advance:

                def direct() -> int:
                    return push_file(
                        ctx.session,
                        self.local_path,
                        self.cache_dir,
                        name=entry.filename,
                        sha256=entry.sha256,
                        progress=advance,
                    )

                # the relay reaches nodes over SSH channels or srun steps alike
                if self.push == "relay" and ctx.relay and hasattr(ctx.session, "open_channel"):
                    sent, route = ctx.relay.push(
                        ctx.session,
                        [(self.local_path, entry.filename)],
                        self.cache_dir,
                        direct,
                        progress=advance,
                    )
                else:
                    sent, route = direct(), "direct"
            ctx.bytes_sent += sent
            how = f"pushed {sent / 1e6:.1f} MB, {route}"
        installed_version = _installed(ctx.state)
        # dependencies come from the lock (installed before); nothing from any index
        pip = [self.python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
        pip += ["--no-index", "--no-deps"]
        if installed_version == entry.version:
            pip.append("--force-reinstall")  # same version, other build: replace it
        pip.append(f"{self.cache_dir.rstrip('/')}/{entry.filename}")
        spec = {
            "name": entry.key,
            "key": entry.key,
            "module": entry.module,
            "version": entry.version,
            "sha256": entry.sha256,
            "filename": entry.filename,
            "state_file": self.state_file,
        }
        checks = {f: FEATURE_CHECKS[f] for f in entry.features}
        verify = shell.join(
            [self.python, "-c", _VERIFY_AND_RECORD_PY, json.dumps(spec), json.dumps(checks)]
        )
        env = shell.quote(self.env_file)
        source = f"if [ -f {env} ]; then . {env} >/dev/null 2>&1; fi; " if self.env_file else ""
        try:
            out = ctx.run(
                f"{shell.join(pip)} >/dev/null || exit {EXIT_PIP}; {source}{verify}"
            ).stdout
        except CommandFailed as exc:
            if exc.exit_status == EXIT_PIP:
                raise PipFailed.of(exc) from exc
            raise
        out = out.strip()
        try:
            verified = json.loads(out.splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            verified = {}
        features = ", ".join(verified.get("features", [])) or "import"
        return f"{how}, installed, verified ({features})"


def _installed(state: str) -> str:
    for line in state.splitlines():
        if line.startswith("installed "):
            return line.split(" ", 1)[1].strip()
    return "none"


__all__ = ["Wheel", "FAILED"]
