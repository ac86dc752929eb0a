"""What a login that is not root needs on a node: the GPUs, locked memory, its paths.

The fact `access` (facts/processes.py, gathered by facts/remote/probe.py access_facts):
the render nodes' owner group and whether this login may open them, RLIMIT_MEMLOCK,
and whether each configured path (or the directory that would hold it) is writable.
Root passes the first and last by definition; anything the probe could not read is a
skip with its reason, never a failure.
"""

from __future__ import annotations

from typing import Any

from ..facts.node import NodeFacts
from . import FAIL, PASS, SKIP, WARN, Verdict, node_check, verdict


def _access(facts: NodeFacts) -> dict[str, Any] | None:
    raw = facts.access
    return raw if isinstance(raw, dict) else None


@node_check(
    "access.gpu",
    "the login may open the GPUs' render nodes (/dev/dri/renderD*)",
    reads=("/dev/dri",),
)
def check_gpu_access(facts: NodeFacts, _expect: object) -> Verdict:
    access = _access(facts)
    if access is None:
        return verdict(SKIP, "not probed (the python probe did not run)")
    nodes = [n for n in access.get("render_nodes") or [] if isinstance(n, dict)]
    if not nodes:
        return verdict(SKIP, "no /dev/dri/renderD* on the node (gpu.driver tells why)")
    unreadable = [n for n in nodes if n.get("error")]
    if unreadable:
        return verdict(SKIP, f"cannot stat {unreadable[0]['path']}: {unreadable[0]['error']}")
    user = access.get("user") or f"uid {access.get('uid')}"
    groups = sorted({str(n.get("group")) for n in nodes})
    denied = [n["path"] for n in nodes if not n.get("rw")]
    wanted = f"expected read-write access to {len(nodes)} render node(s)"
    if not denied:
        how = "root" if access.get("uid") == 0 else f"{user}, group {', '.join(groups)}"
        return verdict(PASS, f"{how} may open {len(nodes)} render node(s), {wanted}")
    return verdict(
        FAIL,
        f"permission denied on {', '.join(denied[:3])}{' ...' if len(denied) > 3 else ''} "
        f"for {user}: not in group {', '.join(groups)} that owns them "
        f"(add it: `usermod -aG {groups[0]} {user}`, then log in again), {wanted}",
        denied=denied,
        groups=groups,
    )


@node_check("access.memlock", "locked-memory limit (ulimit -l)")
def check_memlock(facts: NodeFacts, _expect: object) -> Verdict:
    access = _access(facts)
    limits = access.get("memlock") if access else None
    if not isinstance(limits, list) or len(limits) != 2:
        return verdict(SKIP, "not probed (the python probe did not run)")
    soft, hard = limits
    provider = str(access.get("fi_provider") or "tcp")  # type: ignore[union-attr]
    wanted = f"expected unlimited where libfabric registers memory (FI_PROVIDER {provider}: " + (
        "tcp registers none)" if provider == "tcp" else "cxi/verbs/psm3 pin it)"
    )
    if soft is None or soft < 0:
        return verdict(PASS, f"ulimit -l unlimited, {wanted}")
    shown = f"{soft // 1024} KiB" + (f" (hard {hard // 1024} KiB)" if hard and hard > 0 else "")
    if provider == "tcp":
        return verdict(PASS, f"ulimit -l is {shown}, {wanted}", soft=soft)
    return verdict(
        WARN,
        f"ulimit -l is {shown}; pinned buffers beyond it fail or fall back, {wanted}",
        soft=soft,
        hard=hard,
    )


@node_check("access.paths", "the login may write the configured paths")
def check_paths(facts: NodeFacts, _expect: object) -> Verdict:
    access = _access(facts)
    paths = access.get("paths") if access else None
    if not isinstance(paths, dict):
        return verdict(SKIP, "not probed (the python probe did not run)")
    names = ", ".join(sorted(paths))
    wanted = f"expected {names} writable by the login"
    if access.get("uid") == 0:  # type: ignore[union-attr]
        return verdict(PASS, f"root may write {names}, {wanted}")
    if access.get("become"):  # type: ignore[union-attr]
        return verdict(
            PASS,
            f"provision writes {names} through sudo (ansible_become) and hands "
            f"state_dir to the login, {wanted}",
        )
    denied = {n: p for n, p in paths.items() if isinstance(p, dict) and not p.get("writable")}
    if not denied:
        return verdict(PASS, f"{access.get('user')} may write {names}, {wanted}")  # type: ignore[union-attr]
    shown = "; ".join(
        f"{n} {p.get('path')} (nearest existing: {p.get('checked')})" for n, p in denied.items()
    )
    return verdict(
        FAIL,
        f"not writable by {access.get('user')}: {shown}; put install_dir, state_dir, venv "  # type: ignore[union-attr]
        f"and build_dir under the home directory or set ansible_become, {wanted}",
        denied=sorted(denied),
    )
