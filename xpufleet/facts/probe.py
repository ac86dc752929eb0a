"""The doctor probe as it travels: one constant remote command plus a script on its stdin.

The command is always `exec sh -s`; the script on stdin runs `python3 -` on the
embedded probe (facts/remote/probe.py) when python3 exists, else the POSIX-sh probe
(facts/remote/probe.sh). Both are assembled from the fact registry (facts.registry):
python evaluates each fact's expression, sh runs each fact's snippet, and both print
one section per fact after a random boundary line (facts.batch, the project's one
probe mechanism, also provision's). Parameters (inventory variables, the peers'
rendezvous addresses) travel inside stdin as data: a JSON literal for Python,
`read -r` lines for sh; nothing from the inventory is ever spliced into shell code.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import shell
from ..errors import InputError
from ..host import Host
from ..nodestate import node_lock_path, node_state_path
from ..sizing import rendezvous_address
from ..transport import Session
from .batch import new_boundary, probe_script, split_probe
from .node import FACTS
from .packages import RUNTIME_PACKAGES
from .registry import sh_params, sh_variable
from .weights import MANIFEST_NAME

_REMOTE = Path(__file__).resolve().parent / "remote"
IMPORTS_PROBE = _REMOTE / "imports.py"

PROBE_COMMAND = "exec sh -s"
#: the remote command's own deadline; every tool inside has a shorter one
PROBE_TIMEOUT_S = 150.0
#: a rendezvous port that does not answer within this is reported as dropped
CONNECT_TIMEOUT_S = 2.0

_PY_END = "__XPUFLEET_PROBE_PY__"
_PARAMS_END = "__XPUFLEET_PROBE_PARAMS__"


def _sh_read() -> str:
    """The sh probe's parameter reads: one `read -r P_<NAME>` per registered parameter."""
    reads = "; ".join(f"IFS= read -r {sh_variable(p)}" for p in sh_params())
    return "{ " + reads + "; }"


def rendezvous_target(host: Host) -> dict[str, Any]:
    """Where a node would listen for the rendezvous if it were node 0."""
    return {
        "host": host.name,
        "address": rendezvous_address(host),
        "port": host.var.rendezvous_port,
    }


def probe_params(host: Host, peers: Sequence[Host] = ()) -> dict[str, Any]:
    """Everything the probe needs to know about this host and its peers, as plain data.

    `peers` are the selected hosts in inventory order (node 0 first): the probe tries a
    TCP connection to each one's rendezvous address and port, so doctor can tell which
    node's port is dropped (everyone times out on it) from which node cannot get out."""
    params: dict[str, Any] = {
        "address": host.address,
        "nic": host.var.nic,
        "venv": host.var.venv,
        "oneapi_root": host.var.oneapi_root,
        "wheels_manifest": node_state_path(host.var.state_dir),
        "model_path": host.var.model_path,
        "model_manifest": MANIFEST_NAME,
        "device_hierarchy": host.var.device_hierarchy,
        "ports": sorted({host.var.sglang_port, host.var.rendezvous_port}),
        "packages": list(RUNTIME_PACKAGES),
        "imports": {
            "modules": list(host.var.python_imports),
            "lock": node_lock_path(host.var.state_dir),
        },
        "connect_timeout": CONNECT_TIMEOUT_S,
        "budget": PROBE_TIMEOUT_S - 30,
        # what a non-root login must be able to write (checks/access.py)
        "paths": {
            n: str(host.var.values[n]) for n in ("install_dir", "state_dir", "venv", "build_dir")
        },
        "become": host.become is not None,
        "fi_provider": host.var.fi_provider,
    }
    params["rendezvous"] = [rendezvous_target(peer) for peer in peers]
    return params


def _sh_param_lines(params: dict[str, Any]) -> str:
    """The data lines `_sh_read()` reads, in the same order (both from `sh_params()`)."""
    lines = []
    for key in sh_params():
        value = params.get(key)
        text = " ".join(value) if isinstance(value, list) else "" if value is None else str(value)
        if "\n" in text or "\r" in text:
            raise InputError("a newline is not allowed in this value", key=key)
        if text in (_PY_END, _PARAMS_END):
            raise InputError(f"a probe parameter contains the reserved line {text}", key=key)
        lines.append(text)
    return "\n".join(lines)


@dataclass(frozen=True)
class ProbeScript:
    """The stdin of PROBE_COMMAND and the boundary its answer's sections start with."""

    text: str
    boundary: str

    def decode(self, stdout: str) -> dict[str, Any] | None:
        """The raw value of every fact the node sent (key -> JSON value), or None when
        the answer has no complete set of sections (the probe died or printed nothing)."""
        if f"{self.boundary} end" not in stdout:
            return None
        raw: dict[str, Any] = {}
        errors: list[str] = []
        for fact, text in zip(FACTS, split_probe(stdout, self.boundary, len(FACTS)), strict=True):
            if not text.strip():
                continue
            try:
                raw[fact.key] = json.loads(text)
            except ValueError as exc:
                errors.append(f"{fact.key}: unreadable answer ({exc}): {text[:80]!r}")
        if errors:
            probe = raw.get("probe") if isinstance(raw.get("probe"), dict) else {}
            raw["probe"] = dict(probe, errors=[*probe.get("errors", []), *errors])
        return raw


def build_script(params: dict[str, Any]) -> ProbeScript:
    """The stdin of PROBE_COMMAND: python3 probe if possible, POSIX-sh probe otherwise."""
    boundary = new_boundary()
    return ProbeScript(
        _script(
            f"PARAMS = json.loads({json.dumps(params, sort_keys=True)!r})",
            f"{_sh_read()} <<'{_PARAMS_END}'\n{_sh_param_lines(params)}\n{_PARAMS_END}\n",
            boundary,
        ),
        boundary,
    )


def build_node_script(params_by_node: dict[str, dict[str, Any]], selector: str) -> ProbeScript:
    """One stdin for many nodes (one `srun` broadcasts it): the probe's source once, each
    node's parameters picked by the node name in environment variable `selector`."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", selector):
        raise ValueError(f"not an environment variable name: {selector!r}")
    literal = json.dumps(params_by_node, sort_keys=True)
    branches = "".join(
        f"{shell.quote(node)}) "
        f"{_sh_read()} "
        f"<<'{_PARAMS_END}'\n{_sh_param_lines(params)}\n{_PARAMS_END}\n;;\n"
        for node, params in params_by_node.items()
    )
    boundary = new_boundary()
    return ProbeScript(
        _script(
            f"import os\nPARAMS = json.loads({literal!r})[os.environ[{selector!r}]]",
            f'case "${selector}" in\n{branches}'
            f'*) echo "no probe parameters for node ${selector}" >&2; exit 97;;\nesac\n',
            boundary,
        ),
        boundary,
    )


def _script(python_params: str, sh_params: str, boundary: str) -> str:
    """The probe script around its parameters: `python_params` sets PARAMS for the python
    probe, `sh_params` reads the P_* variables of the sh probe."""
    python_source = (_REMOTE / "probe.py").read_text()
    sh_source = (_REMOTE / "probe.sh").read_text()
    facts = [[f.key, f.python, f.background, f.last] for f in FACTS]
    script = (
        # the node's clock as early as possible: python's start-up stays out of the
        # window the clock offset is measured in
        "XPUFLEET_PROBE_T0=$(date +%s.%N 2>/dev/null); export XPUFLEET_PROBE_T0\n"
        "if command -v python3 >/dev/null 2>&1; then\n"
        f"exec python3 - <<'{_PY_END}'\n"
        f"import json\n{python_params}\n"
        f"FACTS = json.loads({json.dumps(facts)!r})\n"
        f"BOUNDARY = {boundary!r}\n"
        # facts/remote/imports.py once, as a string the env probe runs in the venv's python
        f"IMPORTS_PROBE = {IMPORTS_PROBE.read_text()!r}\n"
        f"{python_source}\n"
        f"{_PY_END}\n"
        "fi\n"
        f"{sh_params}"
        f"{sh_source}"
        f"{probe_script([f.sh for f in FACTS], boundary)}"
    )
    if script.count(f"\n{_PY_END}\n") != 1:
        raise InputError(f"a probe parameter contains the reserved line {_PY_END}")
    return script


@dataclass
class ProbeOutput:
    """The raw facts of one host plus the control node's timing of the round trip."""

    host: str
    raw: dict[str, Any] | None
    sent: float
    received: float
    exit_status: int
    stderr: str
    round_trips: int
    error: str | None = None


def run_probe(session: Session, params: dict[str, Any]) -> ProbeOutput:
    """One round trip: send the probe, read its sections back."""
    script = build_script(params)
    sent = time.time()
    result = session.run(PROBE_COMMAND, stdin=script.text, timeout=PROBE_TIMEOUT_S, check=False)
    received = time.time()
    return probe_output(
        session.host.name,
        script,
        result.stdout,
        result.stderr,
        result.exit_status,
        sent=sent,
        received=received,
        round_trips=session.round_trips,
    )


def probe_output(
    host: str,
    script: ProbeScript,
    stdout: str,
    stderr: str,
    exit_status: int,
    *,
    sent: float,
    received: float,
    round_trips: int,
) -> ProbeOutput:
    """The probe's answer (one section per fact), or why there is none."""
    raw = script.decode(stdout)
    error = None
    if raw is None:
        error = (
            f"probe printed no facts (first bytes: {stdout.strip()[:80]!r})"
            if stdout.strip()
            else f"probe printed nothing (exit {exit_status})"
        )
    return ProbeOutput(
        host=host,
        raw=raw,
        sent=sent,
        received=received,
        exit_status=exit_status,
        stderr=stderr,
        round_trips=round_trips,
        error=error,
    )
