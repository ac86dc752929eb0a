"""Processes area: leftovers of an earlier run holding the GPUs or the SGLang and
rendezvous ports (the probe scans /proc)."""

from __future__ import annotations

from ..facts.node import NodeFacts
from . import FAIL, PASS, SKIP, Verdict, node_check, verdict
from .expect import Expect
from .network import _is_loopback, _node_addresses

GPU_DAEMONS = frozenset({"xpumd", "xpum", "xpu-smi"})
WILDCARDS = frozenset({"0.0.0.0", "::"})


def _holder_text(pid: int, comm: str | None, cmdline: str | None) -> str:
    what = (cmdline or comm or "?")[:60]
    return f"pid {pid} ({what})"


@node_check("proc.gpu", "leftover processes holding the GPUs")
def check_gpu_holders(facts: NodeFacts, expect: Expect) -> Verdict:
    busy = facts.busy
    wanted = "expected no process holding /dev/dri"
    if busy is None:
        return verdict(SKIP, "not scanned (probe ran without python3)")
    holders = {}
    for path, holder in busy.dri:
        if (holder.comm or "") in GPU_DAEMONS:
            continue
        holders.setdefault(holder.pid, (holder, []))[1].append(path)
    partial = "" if busy.complete else " (some /proc entries unreadable)"
    if holders:
        shown = "; ".join(
            f"{_holder_text(pid, h.comm, h.cmdline)} on {', '.join(sorted(set(paths)))}"
            for pid, (h, paths) in sorted(holders.items())
        )
        return verdict(
            FAIL,
            f"found {len(holders)} process(es) holding GPUs: {shown}, {wanted}",
            pids=sorted(holders),
        )
    access = facts.access
    if partial and isinstance(access, dict) and access.get("uid") not in (0, None):
        return verdict(
            SKIP,
            f"not root ({access.get('user')}): other users' /proc entries are unreadable, "
            f"none found among the readable ones, {wanted}",
        )
    return verdict(PASS, f"found none{partial}, {wanted}")


def _counts_here(address: str, own: set[str], same_ns: list[bool]) -> bool:
    """Does a listener block this node? Its own address always; wildcard and loopback
    listeners only when held from this node's mount namespace (or the holder is unknown):
    nodes that share one network namespace (the lab, containers) see each other's."""
    if address in own:
        return True
    if address in WILDCARDS or _is_loopback(address):
        return not same_ns or any(same_ns)
    return False


@node_check("proc.ports", "leftover processes on the serving, rendezvous and (vLLM) Ray ports")
def check_ports(facts: NodeFacts, expect: Expect) -> Verdict:
    busy = facts.busy
    ports = ", ".join(str(p) for p in expect.ports)
    wanted = f"expected ports {ports} free"
    if busy is None:
        return verdict(SKIP, "not scanned (probe ran without python3)")
    own = set(_node_addresses(facts, expect))
    if facts.nic:
        own |= {i.address for i in facts.nic.addresses if facts.nic.name != "lo"}
    found = []
    for listener in busy.listeners:
        same_ns = [h.same_namespace for h in listener.holders]
        if listener.port not in expect.ports or not _counts_here(listener.address, own, same_ns):
            continue
        holders = [h for h in listener.holders if h.same_namespace] or listener.holders
        who = ", ".join(_holder_text(h.pid, h.comm, h.cmdline) for h in holders) or "unknown pid"
        found.append(f"{listener.address}:{listener.port} held by {who}")
    if found:
        return verdict(FAIL, f"found {'; '.join(found)}, {wanted}")
    return verdict(PASS, f"found none listening, {wanted}")
