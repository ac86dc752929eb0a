"""Cluster checks: what only shows when the nodes are compared with each other.

Different versions on different nodes hang multi-node runs (sglang#6465), a node that
cannot reach node 0's rendezvous port hangs init for the store timeout, and a model
that does not fit the planned devices fails only after minutes of loading.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from ..errors import PlanError
from ..facts.network import Rendezvous
from ..facts.node import NodeFacts
from ..host import Host
from ..nodeset import fold
from ..results import Result
from ..sizing import (
    default_nnodes,
    device_memory_gb,
    devices_per_node,
    model_fit,
    rendezvous_address,
    usable_fraction,
)
from . import FAIL, PASS, SKIP, WARN, check, result
from .weights import check_model_same, model_bytes

CLUSTER_VERSIONS = check("cluster.versions", "same versions on every node", "cluster")
CLUSTER_WHEELS = check("cluster.wheels", "same wheel hashes on every node", "cluster")
NET_RENDEZVOUS = check(
    "net.rendezvous",
    "the node reaches node 0's rendezvous port and its own is reachable",
    "node",
)
CLUSTER_RENDEZVOUS = check(
    "cluster.rendezvous",
    "every node reaches node 0's rendezvous port",
    "cluster",
)
CLUSTER_PLAN = check("cluster.plan", "the model fits the planned devices", "cluster")

ABSENT = "absent"
#: components whose mismatch only weakens diagnostics (warn); all others fail
DIAGNOSTIC_ONLY = frozenset({"xpu-smi"})


def versions_of(facts: NodeFacts) -> dict[str, str]:
    """The version signature of one node: component -> version (or 'absent')."""
    out: dict[str, str] = {}
    loaded = [m for m in facts.modules.values() if m.present]
    out["kernel driver"] = f"{loaded[0].name} {loaded[0].version or '?'}" if loaded else ABSENT
    for name in ("intel-level-zero-gpu", "level-zero", "intel-opencl-icd"):
        pkg = facts.packages.get(name)
        out[name] = pkg.version or "?" if pkg and pkg.installed else ABSENT
    version = facts.tools.xpu_smi_version
    out["xpu-smi"] = version.cli or "?" if version else ABSENT
    oneapi = facts.oneapi
    out["oneapi"] = (oneapi.version or "?") if oneapi and oneapi.exists else ABSENT
    out["oneccl"] = (oneapi.ccl_version or ABSENT) if oneapi else ABSENT
    out["python"] = facts.env.python_version or facts.python_version or ABSENT
    if facts.env.present:
        torch = facts.env.torch
        out["torch"] = torch.version or "?" if torch else ABSENT
        for name, version_str in sorted(facts.env.packages.items()):
            out[f"pip:{name}"] = version_str
    return out


def _odd_ones(values: Mapping[str, str]) -> tuple[str, list[str], str]:
    """(majority value, hosts not on it, 'node3 2024.0 vs node[1-2,4] 2025.0')."""
    groups: dict[str, list[str]] = defaultdict(list)
    for host, value in values.items():
        groups[value].append(host)
    ranked = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    majority = ranked[0][0]
    odd = [h for value, hosts in ranked[1:] for h in hosts]
    shown = " vs ".join(f"{fold(hosts)} {value}" for value, hosts in reversed(ranked))
    return majority, odd, shown


def check_versions(nodes: Mapping[str, NodeFacts]) -> Result:
    if len(nodes) < 2:
        return result(CLUSTER_VERSIONS, SKIP, f"{len(nodes)} node(s): nothing to compare")
    signatures = {host: versions_of(f) for host, f in nodes.items()}
    components = sorted({c for sig in signatures.values() for c in sig})
    differing: list[tuple[str, list[str], str]] = []
    for component in components:
        values = {h: sig.get(component, ABSENT) for h, sig in signatures.items()}
        if len(set(values.values())) > 1:
            _, odd, shown = _odd_ones(values)
            differing.append((component, odd, shown))
    if not differing:
        return result(
            CLUSTER_VERSIONS,
            PASS,
            f"found the same {len(components)} component versions on {fold(nodes)}, "
            "expected the same everywhere",
        )
    odd_hosts = sorted({h for _, odd, _ in differing for h in odd})
    status = WARN if all(c in DIAGNOSTIC_ONLY for c, _, _ in differing) else FAIL
    shown = "; ".join(f"{c}: {text}" for c, _, text in differing)
    return result(
        CLUSTER_VERSIONS,
        status,
        f"odd ones out {fold(odd_hosts)}: {shown}; expected the same versions everywhere",
        odd=odd_hosts,
        components=[c for c, _, _ in differing],
    )


def check_wheels(nodes: Mapping[str, NodeFacts]) -> Result:
    with_manifest = {h: f.wheels for h, f in nodes.items() if f.wheels is not None}
    if not with_manifest:
        return result(
            CLUSTER_WHEELS,
            SKIP,
            "no node has an installed-wheels manifest (wheels.json; not provisioned yet)",
        )
    names = sorted({n for wheels in with_manifest.values() for n in wheels or {}})
    differing = []
    for name in names:
        values = {
            h: (f.wheels[name].sha256[:12] if f.wheels and name in f.wheels else ABSENT)
            for h, f in nodes.items()
        }
        if len(set(values.values())) > 1:
            _, odd, shown = _odd_ones(values)
            differing.append((name, odd, shown))
    without = sorted(set(nodes) - set(with_manifest))
    if not differing and not without:
        return result(
            CLUSTER_WHEELS,
            PASS,
            f"found the same sha256 of {len(names)} wheel(s) on {fold(nodes)}, "
            "expected the same everywhere",
        )
    odd_hosts = sorted({h for _, odd, _ in differing for h in odd} | set(without))
    parts = [f"{name}: {text}" for name, _, text in differing]
    if without:
        parts.append(f"no wheels.json on {fold(without)}")
    return result(
        CLUSTER_WHEELS,
        FAIL,
        f"odd ones out {fold(odd_hosts)}: {'; '.join(parts)}; expected the same wheels everywhere",
        odd=odd_hosts,
    )


def _reached(outcome: Rendezvous | None) -> bool | None:
    """True: connected or refused (reachable); False: dropped; None: not tested."""
    if outcome is None:
        return None
    return outcome.result in ("refused", "open")


def check_rendezvous(
    nodes: Mapping[str, NodeFacts], hosts: Sequence[Host]
) -> tuple[dict[str, Result], Result]:
    """Per-node `net.rendezvous` and the cluster summary, from every node's TCP connects
    to every node's rendezvous port. A port nobody else reaches is that node's fault (its
    firewall drops it); a node that cannot reach a port the others reach has the fault
    itself (its way out is blocked). Node 0 is the first selected host."""
    names = [h.name for h in hosts]
    targets = {h.name: f"{rendezvous_address(h)}:{h.var.rendezvous_port}" for h in hosts}
    tested = {s: f.rendezvous for s, f in nodes.items() if f.rendezvous is not None}
    matrix = {(s, t): _reached(r.get(t)) for s, r in tested.items() for t in names}
    dropped: dict[str, list[str]] = {}
    for target in names:
        others = [s for s in tested if s != target and matrix.get((s, target)) is not None]
        failed = [s for s in others if matrix[(s, target)] is False]
        itself = matrix.get((target, target))
        # one failing peer alone could be that peer's own way out: the target's
        # connect to itself (or a second peer) decides
        everyone = bool(others) and len(failed) == len(others)
        if (everyone and (len(others) >= 2 or itself is not True)) or (
            not others and itself is False
        ):
            dropped[target] = failed or [target]
    per_node: dict[str, Result] = {}
    node0 = names[0] if names else None
    for name in names:
        if name not in tested:
            reason = "not tested (probe ran without python3)" if name in nodes else "no facts"
            per_node[name] = result(NET_RENDEZVOUS, SKIP, f"{reason}")
            continue
        problems = []
        if name in dropped:
            sources = dropped[name]
            outcome = tested[sources[0]][name].result
            who = "itself" if sources == [name] else fold(sources)
            problems.append(f"its rendezvous port {targets[name]} is dropped: {outcome} from {who}")
        blocked_out = [t for t in names if t not in dropped and matrix.get((name, t)) is False]
        if blocked_out:
            problems.append(
                f"cannot reach {', '.join(f'{t} {targets[t]}' for t in blocked_out)} "
                f"({tested[name][blocked_out[0]].result}) that the other nodes reach"
            )
        wanted = "expected a connection or a refusal (nothing listening yet) both ways"
        if problems:
            per_node[name] = result(NET_RENDEZVOUS, FAIL, f"{'; '.join(problems)}, {wanted}")
            continue
        to_node0 = tested[name].get(node0) if node0 else None
        reach = (
            f"reaches node 0 {node0} {targets[node0]} ({to_node0.result})"
            if node0 and to_node0
            else "node 0 not tested"
        )
        per_node[name] = result(
            NET_RENDEZVOUS, PASS, f"{reach}; its own {targets[name]} is reachable, {wanted}"
        )
    return per_node, _rendezvous_summary(names, targets, tested, matrix, dropped, per_node)


def _rendezvous_summary(
    names: list[str],
    targets: dict[str, str],
    tested: Mapping[str, object],
    matrix: Mapping[tuple[str, str], bool | None],
    dropped: Mapping[str, list[str]],
    per_node: Mapping[str, Result],
) -> Result:
    if not names or not tested:
        return result(CLUSTER_RENDEZVOUS, SKIP, "no node could test the rendezvous ports")
    node0 = names[0]
    bad = sorted(n for n, r in per_node.items() if r.status == FAIL)
    blocked_to_node0 = sorted(s for s in tested if matrix.get((s, node0)) is False)
    wanted = f"expected every node to reach node 0 {node0} {targets[node0]}"
    if bad:
        parts = []
        if blocked_to_node0:
            parts.append(f"{fold(blocked_to_node0)} cannot reach node 0 {node0} {targets[node0]}")
        if dropped:
            parts.append(f"port dropped on {fold(sorted(dropped))}")
        others = sorted(set(bad) - set(dropped))
        if others:
            parts.append(f"outbound blocked on {fold(others)}")
        return result(CLUSTER_RENDEZVOUS, FAIL, f"{'; '.join(parts)}, {wanted}", odd=bad)
    untested = sorted(set(names) - set(tested))
    extra = f" ({fold(untested)} not tested)" if untested else ""
    return result(
        CLUSTER_RENDEZVOUS,
        PASS,
        f"{fold(sorted(tested))} reach every node's rendezvous port{extra}, {wanted}",
    )


def _power_of_two_at_least(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def check_plan(hosts: Sequence[Host], tp: int | None = None, on_disk: int | None = None) -> Result:
    """Model size vs devices x memory per device (launch's arithmetic), with a suggestion.
    `on_disk`: the model's real size in bytes when node 0 holds it (else model_size_gb)."""
    if not hosts:
        return result(CLUSTER_PLAN, SKIP, "no host selected")
    head = hosts[0]
    size = on_disk / 1e9 if on_disk is not None else head.var.model_size_gb
    per_node = devices_per_node(head)
    memory = device_memory_gb(head)
    fraction = usable_fraction(head)
    available = sum(devices_per_node(h) for h in hosts)
    devices = available if tp is None else tp
    plan = (
        f"--tp {tp}"
        if tp is not None
        else f"all {available} devices of {fold(h.name for h in hosts)}"
    )
    if tp is not None:
        try:
            nnodes = default_nnodes(tp, hosts)
            plan = f"--tp {tp} --nnodes {nnodes}"
        except PlanError as exc:
            return result(CLUSTER_PLAN, FAIL, f"{plan}: {exc.message}")
    fit = model_fit(size, devices, memory, fraction)
    raw = f"{devices} x {memory:g} GB = {devices * memory:g} GB"
    if on_disk is not None:
        raw += f"; model {size:.3g} GB on disk at node 0"
    data = {
        "model_size_gb": size,
        "devices": devices,
        "device_memory_gb": memory,
        "usable_fraction": fraction,
        "model_size_from": "disk" if on_disk is not None else "model_size_gb",
        "capacity_gb": round(fit.capacity_gb, 1),
    }
    if fit.fits:
        return result(CLUSTER_PLAN, PASS, f"{plan} ({raw}): {fit.message}", **data)
    want_tp = _power_of_two_at_least(fit.min_devices)
    want_nodes = math.ceil(want_tp / max(1, per_node))
    suggestion = (
        f"use --tp {want_tp} --nnodes {want_nodes} ({want_tp} x {memory:g} GB x {fraction:.2f} = "
        f"{want_tp * memory * fraction:.1f} GB)"
    )
    if want_nodes > len(hosts):
        suggestion += (
            f": needs {want_nodes} nodes of {per_node} devices, the selection has {len(hosts)}"
        )
    data.update(suggested_tp=want_tp, suggested_nnodes=want_nodes)
    return result(CLUSTER_PLAN, FAIL, f"{plan} ({raw}): {fit.message}; {suggestion}", **data)


def run_cluster_checks(
    nodes: Mapping[str, NodeFacts],
    hosts: Sequence[Host],
    *,
    tp: int | None = None,
) -> tuple[list[Result], dict[str, Result]]:
    """Cluster checks over the nodes whose facts arrived (unreachable ones are left out),
    and the node results that need every node's facts (`net.rendezvous`)."""
    per_node, rendezvous = check_rendezvous(nodes, hosts)
    on_disk = model_bytes(nodes, hosts[0].name if hosts else None)
    results = [
        check_versions(nodes),
        check_wheels(nodes),
        rendezvous,
        check_model_same(nodes),
        check_plan(hosts, tp, on_disk),
    ]
    return results, per_node
