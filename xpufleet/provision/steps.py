"""Idempotent steps: each one probes its state, decides (pure), and applies only a change.

A step contributes a small POSIX-sh snippet to the host's probe (the engine runs the
snippets of all steps in ONE remote command), decides from that snippet's output with
a pure function (unit-tested), and only when something differs applies its change.
Kinds: Directory, File / Template, Packages (pip, pinned), Command (with a guard),
Check (probe only). Wheels live in `wheels.py`.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from .. import shell
from ..requirements import parse_requirement, unsatisfied
from ..results import CHANGED, FAILED, OK, SKIP
from .context import ApplyContext


@dataclass(frozen=True)
class Decision:
    """What a step found: `ok` (nothing to do), `changed` (action to take), `failed`, `skip`."""

    status: str
    message: str
    diff: str | None = None

    @property
    def needs_change(self) -> bool:
        return self.status == CHANGED


@dataclass
class Step:
    """Base of every step: a stable id, tags for --tags/--skip-tags."""

    id: str
    tags: frozenset[str] = field(default_factory=frozenset)

    #: after this step changed something, later steps' probes are stale (run them again)
    reprobe: bool = False

    def probe(self) -> str:
        raise NotImplementedError

    def decide(self, state: str, *, diff: bool = False) -> Decision:
        raise NotImplementedError

    def apply(self, ctx: ApplyContext) -> str:
        """Make the change; return a short message; raise HostError on failure."""
        raise NotImplementedError


# -- directory ---------------------------------------------------------------------


@dataclass
class Directory(Step):
    path: str = ""
    mode: int = 0o755

    def probe(self) -> str:
        p = shell.quote(self.path)
        return (
            f"if [ -d {p} ]; then stat -c %a {p}; elif [ -e {p} ]; then echo notdir; "
            "else echo absent; fi"
        )

    def decide(self, state: str, *, diff: bool = False) -> Decision:
        state = state.strip()
        if state == "absent":
            return Decision(CHANGED, f"create directory {self.path} (mode {self.mode:o})")
        if state == "notdir":
            return Decision(FAILED, f"{self.path} exists and is not a directory")
        if _mode(state) != self.mode:
            return Decision(CHANGED, f"chmod {self.mode:o} {self.path} (was {state})")
        return Decision(OK, f"directory {self.path}")

    def apply(self, ctx: ApplyContext) -> str:
        p = shell.quote(self.path)
        ctx.run(f"mkdir -p {p} && chmod {self.mode:o} {p}")
        return ""


def _mode(text: str) -> int | None:
    try:
        return int(text, 8)
    except ValueError:
        return None


# -- file / template ---------------------------------------------------------------


@dataclass
class File(Step):
    """A file with exact content and mode; content travels on stdin (never in argv)."""

    path: str = ""
    content: bytes = b""
    mode: int = 0o644
    #: holds secrets: 0600 expected, content never shown in diffs, logs or JSON
    secret: bool = False
    #: where the content came from (a template name), for messages
    source: str = ""

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def probe(self) -> str:
        p = shell.quote(self.path)
        # the old content comes back only for diffs, and never for a secret file
        content = (
            ""
            if self.secret
            else f'if [ "$s" != {self.sha256} ]; then echo content $(base64 -w0 < {p}); fi; '
        )
        return (
            f"if [ -f {p} ]; then echo mode $(stat -c %a {p}); "
            f"s=$(sha256sum < {p} | cut -c1-64); echo sha $s; {content}"
            f"elif [ -e {p} ]; then echo notfile; else echo absent; fi"
        )

    def decide(self, state: str, *, diff: bool = False) -> Decision:
        facts = dict(line.split(" ", 1) for line in state.strip().splitlines() if " " in line)
        flat = state.strip()
        what = f"{self.path}" + (f" from {self.source}" if self.source else "")
        if flat == "notfile":
            return Decision(FAILED, f"{self.path} exists and is not a regular file")
        if flat == "absent":
            return Decision(CHANGED, f"create {what}", self._diff(None) if diff else None)
        sha = facts.get("sha", "").strip()
        mode = _mode(facts.get("mode", "").strip())
        if sha != self.sha256:
            old = None
            if "content" in facts:
                old = base64.b64decode(facts["content"].strip() or "")
            return Decision(CHANGED, f"update {what}", self._diff(old) if diff else None)
        if mode != self.mode:
            shown = f"{mode:o}" if mode is not None else "?"
            return Decision(CHANGED, f"chmod {self.mode:o} {self.path} (was {shown})")
        return Decision(OK, f"{self.path} up to date")

    def _diff(self, old: bytes | None) -> str:
        if self.secret:
            return f"--- {self.path}\n+++ {self.path}\n(content hidden: the file holds secrets)\n"
        before = (old or b"").decode(errors="replace").splitlines(keepends=True)
        after = self.content.decode(errors="replace").splitlines(keepends=True)
        lines = difflib.unified_diff(
            before,
            after,
            fromfile=self.path if old is not None else "/dev/null",
            tofile=self.path,
        )
        return "".join(line if line.endswith("\n") else line + "\n" for line in lines)

    def apply(self, ctx: ApplyContext) -> str:
        p = shell.quote(self.path)
        directory = shell.quote(self.path.rsplit("/", 1)[0] or "/")
        tmp = shell.quote(f"{self.path}.xpufleet-tmp")
        # umask first: a secret file is never readable by others, not even for a moment
        ctx.run(
            f"umask 077 && mkdir -p {directory} && cat > {tmp} && chmod {self.mode:o} {tmp} "
            f"&& mv -f {tmp} {p}",
            stdin=self.content,
        )
        return ""


# -- pip packages --------------------------------------------------------------------

_VERSIONS_PY = (
    "import json, sys, importlib.metadata as m\n"
    "out = {}\n"
    "for n in sys.argv[1:]:\n"
    "    try:\n"
    "        out[n] = m.version(n)\n"
    "    except m.PackageNotFoundError:\n"
    "        out[n] = None\n"
    "print(json.dumps(out))\n"
)


def python_snippet(python: str, code: str, args: list[str], *, absent: str) -> str:
    """Shell: `python -c code args` when that interpreter exists (the env may not yet),
    else print `absent`."""
    py = shell.quote(python)
    return (
        f"if [ -x {py} ]; then {py} -c {shell.quote(code)} {shell.join(args)}; "
        f"else echo {absent}; fi"
    )


@dataclass
class Packages(Step):
    """Pinned pip packages in an environment; pip runs only for the missing/wrong ones."""

    python: str = ""
    requirements: list[str] = field(default_factory=list)
    pip_args: list[str] = field(default_factory=list)
    reprobe: bool = True

    def probe(self) -> str:
        names = [parse_requirement(r).name for r in self.requirements]
        return python_snippet(self.python, _VERSIONS_PY, names, absent="nopython")

    def decide(self, state: str, *, diff: bool = False) -> Decision:
        state = state.strip()
        if state == "nopython" or not state:
            return Decision(CHANGED, f"install {len(self.requirements)} package(s) (no env yet)")
        try:
            installed = json.loads(state.splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            return Decision(FAILED, f"cannot read installed versions: {state[-200:]}")
        todo = unsatisfied(self.requirements, installed)
        if not todo:
            return Decision(OK, f"{len(self.requirements)} package(s) as pinned")
        shown = ", ".join(
            f"{r} (has {installed.get(parse_requirement(r).name) or 'none'})" for r in todo
        )
        return Decision(CHANGED, f"pip install {shown}")

    def apply(self, ctx: ApplyContext) -> str:
        try:
            installed = json.loads(ctx.state.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            installed = {}
        todo = unsatisfied(self.requirements, installed if isinstance(installed, dict) else {})
        if not todo:
            return "already satisfied"
        ctx.pip(
            shell.join(
                [self.python, "-m", "pip", "install", "--no-input", "--disable-pip-version-check"]
                + self.pip_args
                + todo
            )
        )
        return "installed " + ", ".join(todo)


# -- command with a guard ------------------------------------------------------------


@dataclass
class Command(Step):
    """Run `command` unless `guard` (a shell test) already succeeds: never redone."""

    guard: str = ""
    command: str = ""
    #: what the command does, for messages ("create venv /opt/xpufleet/venv")
    action: str = ""
    #: what is true when the guard holds ("venv /opt/xpufleet/venv")
    present: str = ""
    stdin: bytes | None = None

    def probe(self) -> str:
        return f"if ( {self.guard} ) >/dev/null 2>&1; then echo done; else echo todo; fi"

    def decide(self, state: str, *, diff: bool = False) -> Decision:
        if state.strip() == "done":
            return Decision(OK, self.present or f"guard holds: {self.guard}")
        return Decision(CHANGED, self.action or self.command)

    def apply(self, ctx: ApplyContext) -> str:
        ctx.run(self.command, stdin=self.stdin)
        return ""


# -- check (probe only) --------------------------------------------------------------


@dataclass
class Check(Step):
    """A fact a later step relies on (e.g. the oneAPI tree); reports ok or failed."""

    script: str = ""
    evaluate: Callable[[str], Decision] | None = None

    def probe(self) -> str:
        return self.script

    def decide(self, state: str, *, diff: bool = False) -> Decision:
        assert self.evaluate is not None
        return self.evaluate(state)

    def apply(self, ctx: ApplyContext) -> str:  # pragma: no cover - checks never change
        return ""


@dataclass
class Skip(Step):
    """A step that does not apply here, with the reason (e.g. conda-only packages in a venv)."""

    reason: str = ""

    def probe(self) -> str:
        return "true"

    def decide(self, state: str, *, diff: bool = False) -> Decision:
        return Decision(SKIP, self.reason)

    def apply(self, ctx: ApplyContext) -> str:  # pragma: no cover
        return ""
