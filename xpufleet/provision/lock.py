"""The node lock: one xpufleet run that changes a node at a time (provision, launch).

`<state_dir>/lock` is created with O_EXCL (sh `set -C`), so two runs racing for the
same node cannot both win. It holds who took it (owner task, control host, pid, time,
a random token); release removes it only if the token is still ours. A lock left by a
run that died on THIS control node (its pid is gone) is taken over; any other holder
is refused with LockHeld naming it (runbook: docs/runbooks/provision.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass

from .. import shell
from ..errors import CommandFailed, LockHeld
from ..transport import Session

LOCK_NAME = "lock"
RUNBOOK = "docs/runbooks/provision.md#lock-held"


@dataclass(frozen=True)
class NodeLock:
    """A lock this process holds on one node."""

    path: str
    owner: str
    control_host: str
    pid: int
    since: str
    token: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def lock_path(state_dir: str) -> str:
    return f"{state_dir.rstrip('/')}/{LOCK_NAME}"


def parse_holder(text: str) -> dict[str, object]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def holder_is_dead(holder: dict[str, object], *, this_host: str | None = None) -> bool:
    """True only if the holder ran on this control host and its process is gone."""
    if holder.get("control_host") != (this_host or socket.gethostname()):
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def describe(holder: dict[str, object]) -> str:
    if not holder:
        return "an unreadable lock file"
    return (
        f"{holder.get('owner', '?')} (pid {holder.get('pid', '?')} on "
        f"{holder.get('control_host', '?')}, since {holder.get('since', '?')})"
    )


def acquire_lock(session: Session, owner: str, *, state_dir: str | None = None) -> NodeLock:
    """Take the node's lock for `owner` (e.g. "provision", "launch") or raise LockHeld."""
    state_dir = state_dir or session.host.var.state_dir
    path = lock_path(state_dir)
    lock = NodeLock(
        path=path,
        owner=owner,
        control_host=socket.gethostname(),
        pid=os.getpid(),
        since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        token=secrets.token_hex(8),
    )
    take = (
        f"mkdir -p {shell.quote(state_dir)} || exit 3; "
        f"if ( set -C; cat > {shell.quote(path)} ) 2>/dev/null; then echo acquired; "
        f"else echo held; cat {shell.quote(path)}; fi"
    )
    for _attempt in range(2):
        out = session.run(take, stdin=lock.to_json() + "\n").stdout
        first, _, rest = out.partition("\n")
        if first.strip() == "acquired":
            return lock
        holder = parse_holder(rest.strip())
        if not holder_is_dead(holder):
            raise LockHeld(
                session.host.name,
                f"node is locked by {describe(holder)}: {path}; refusing a concurrent "
                f"{owner} (see {RUNBOOK})",
            )
        # the holder died on this control node: remove exactly that lock, then retry
        session.run(
            f'if [ "$(cat {shell.quote(path)})" = {shell.quote(rest.strip())} ]; '
            f"then rm -f {shell.quote(path)}; fi"
        )
    raise LockHeld(session.host.name, f"could not take {path} (see {RUNBOOK})")


def release_lock(session: Session, lock: NodeLock) -> None:
    """Remove the lock if it is still ours (never someone else's)."""
    path = shell.quote(lock.path)
    with contextlib.suppress(CommandFailed):
        session.run(f"grep -qF {shell.quote(lock.token)} {path} 2>/dev/null && rm -f {path}; true")
