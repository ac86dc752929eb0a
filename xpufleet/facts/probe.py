"""The doctor probe as it travels: one constant remote command plus a script on its stdin.

The command is always `exec sh -s`; the script on stdin runs `python3 -` on the
embedded probe (remote_probe.py) when python3 exists, else the POSIX-sh probe
(remote_probe.sh). Parameters (inventory variables, the peers' rendezvous addresses)
travel inside stdin as data: a JSON literal for Python, `read -r` lines for sh;
nothing from the inventory is ever spliced into shell code.
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
from ..variables import var
from .packages import RUNTIME_PACKAGES
from .weights import MANIFEST_NAME

IMPORTS_PROBE = Path(__file__).resolve().parent / "imports_probe.py"

PROBE_COMMAND = "exec sh -s"
#: the remote command's own deadline; every tool inside has a shorter one
PROBE_TIMEOUT_S = 150.0
#: a rendezvous port that does not answer within this is reported as dropped
CONNECT_TIMEOUT_S = 2.0

_HERE = Path(__file__).resolve().parent
_PY_END = "__XPUFLEET_PROBE_PY__"
_PARAMS_END = "__XPUFLEET_PROBE_PARAMS__"
_SH_PARAM_ORDER = (
    "oneapi_root",
    "model_path",
    "nic",
    "venv",
    "device_hierarchy",
    "wheels_manifest",
    "packages",
    "model_manifest",
)


#: the sh probe reads its parameters in _SH_PARAM_ORDER
_SH_READ = (
    "{ IFS= read -r P_ONEAPI; IFS= read -r P_MODEL; IFS= read -r P_NIC; "
    "IFS= read -r P_VENV; IFS= read -r P_HIERARCHY; IFS= read -r P_WHEELS; "
    "IFS= read -r P_PKGS; IFS= read -r P_MANIFEST; }"
)


def rendezvous_target(host: Host) -> dict[str, Any]:
    """Where a node would listen for the rendezvous if it were node 0."""
    return {
        "host": host.name,
        "address": rendezvous_address(host),
        "port": int(var(host, "rendezvous_port")),
    }


def probe_params(host: Host, peers: Sequence[Host] = ()) -> dict[str, Any]:
    """Everything the probe needs to know about this host and its peers, as plain data.

    `peers` are the selected hosts in inventory order (node 0 first): the probe tries a
    TCP connection to each one's rendezvous address and port, so doctor can tell which
    node's port is dropped (everyone times out on it) from which node cannot get out."""
    params: dict[str, Any] = {
        "address": host.address,
        "nic": var(host, "nic"),
        "venv": var(host, "venv"),
        "oneapi_root": var(host, "oneapi_root"),
        "wheels_manifest": node_state_path(var(host, "state_dir")),
        "model_path": var(host, "model_path"),
        "model_manifest": MANIFEST_NAME,
        "device_hierarchy": var(host, "device_hierarchy"),
        "ports": sorted({int(var(host, n)) for n in ("sglang_port", "rendezvous_port")}),
        "packages": list(RUNTIME_PACKAGES),
        "imports": {
            "modules": [str(m) for m in var(host, "python_imports") or []],
            "lock": node_lock_path(var(host, "state_dir")),
        },
        "connect_timeout": CONNECT_TIMEOUT_S,
        "budget": PROBE_TIMEOUT_S - 30,
        # what a non-root login must be able to write (checks/access.py)
        "paths": {n: str(var(host, n)) for n in ("install_dir", "state_dir", "venv", "build_dir")},
        "become": host.become is not None,
        "fi_provider": str(var(host, "fi_provider")),
    }
    params["rendezvous"] = [rendezvous_target(peer) for peer in peers]
    return params


def _sh_param_lines(params: dict[str, Any]) -> str:
    lines = []
    for key in _SH_PARAM_ORDER:
        value = params.get(key)
        text = " ".join(value) if isinstance(value, list) else "" if value is None else str(value)
        if "\n" in text or "\r" in text:
            raise InputError("a newline is not allowed in this value", key=key)
        if text in (_PY_END, _PARAMS_END):
            raise InputError(f"a probe parameter contains the reserved line {text}", key=key)
        lines.append(text)
    return "\n".join(lines)


def build_script(params: dict[str, Any]) -> str:
    """The stdin of PROBE_COMMAND: python3 probe if possible, POSIX-sh probe otherwise."""
    return _script(
        f"PARAMS = json.loads({json.dumps(params, sort_keys=True)!r})",
        f"{_SH_READ} <<'{_PARAMS_END}'\n{_sh_param_lines(params)}\n{_PARAMS_END}\n",
    )


def build_node_script(params_by_node: dict[str, dict[str, Any]], selector: str) -> str:
    """One stdin for many nodes (one `srun` broadcasts it): the probe's source once, each
    node's parameters picked by the node name in environment variable `selector`."""
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", selector):
        raise ValueError(f"not an environment variable name: {selector!r}")
    literal = json.dumps(params_by_node, sort_keys=True)
    branches = "".join(
        f"{shell.quote(node)}) "
        f"{_SH_READ} "
        f"<<'{_PARAMS_END}'\n{_sh_param_lines(params)}\n{_PARAMS_END}\n;;\n"
        for node, params in params_by_node.items()
    )
    return _script(
        f"import os\nPARAMS = json.loads({literal!r})[os.environ[{selector!r}]]",
        f'case "${selector}" in\n{branches}'
        f'*) echo "no probe parameters for node ${selector}" >&2; exit 97;;\nesac\n',
    )


def _script(python_params: str, sh_params: str) -> str:
    """The probe script around its parameters: `python_params` sets PARAMS for the python
    probe, `sh_params` reads the P_* variables of the sh probe."""
    python_source = (_HERE / "remote_probe.py").read_text()
    sh_source = (_HERE / "remote_probe.sh").read_text()
    script = (
        # the node's clock as early as possible: python's start-up stays out of the
        # window the clock offset is measured in
        "XPUFLEET_PROBE_T0=$(date +%s.%N 2>/dev/null); export XPUFLEET_PROBE_T0\n"
        "if command -v python3 >/dev/null 2>&1; then\n"
        f"exec python3 - <<'{_PY_END}'\n"
        f"import json\n{python_params}\n"
        # imports_probe.py once, as a string the env probe runs in the venv's python
        f"IMPORTS_PROBE = {IMPORTS_PROBE.read_text()!r}\n"
        f"{python_source}\n"
        f"{_PY_END}\n"
        "fi\n"
        f"{sh_params}"
        f"{sh_source}"
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
    """One round trip: send the probe, read one JSON document back."""
    script = build_script(params)
    sent = time.time()
    result = session.run(PROBE_COMMAND, stdin=script, timeout=PROBE_TIMEOUT_S, check=False)
    received = time.time()
    return probe_output(
        session.host.name,
        result.stdout,
        result.stderr,
        result.exit_status,
        sent=sent,
        received=received,
        round_trips=session.round_trips,
    )


def probe_output(
    host: str,
    stdout: str,
    stderr: str,
    exit_status: int,
    *,
    sent: float,
    received: float,
    round_trips: int,
) -> ProbeOutput:
    """The probe's answer (its last stdout line is one JSON document), or why there is none."""
    raw: dict[str, Any] | None = None
    error = None
    text = stdout.strip()
    try:
        doc = json.loads(text.splitlines()[-1]) if text else None
        raw = doc if isinstance(doc, dict) else None
    except ValueError as exc:
        error = f"probe printed no JSON ({exc})"
    if raw is None and error is None:
        error = f"probe printed nothing (exit {exit_status})"
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
