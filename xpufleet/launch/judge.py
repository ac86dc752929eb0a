"""Pure judgement of what the nodes reported: preflight verdicts with their likely cause,
the first rank that died, and per-rank status rows. No SSH here; unit-tested on dicts
shaped like the node scripts' JSON."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..nodeset import fold
from ..results import FAIL, OK, PASS, SKIP, Result
from ..runbooks import link
from .plan import LaunchPlan, url_host

RUNBOOK_PREFLIGHT = link("launch", "Preflight failure")
RUNBOOK_RENDEZVOUS = link("launch", "Rendezvous timeout")
RUNBOOK_RANK_CRASH = link("launch", "Rank crash")
RUNBOOK_OOM = link("launch", "Out of memory")
RUNBOOK_WARMUP = link("launch", "Warm-up timeout")
RUNBOOK_PORT = link("launch", "Port in use")
RUNBOOK_LEFTOVERS = link("launch", "Leftover ranks")
RUNBOOK_DEVICE = link("launch", "Rank on the wrong device")

OOM_MARKERS = ("out of memory", "outofmemory", "out_of_device_memory", "oom")


def spans(numbers: Iterable[int]) -> str:
    """`[0, 1, 2, 5]` -> `0-2,5`."""
    values = sorted(set(numbers))
    if not values:
        return ""
    parts = []
    start = prev = values[0]
    for value in values[1:]:
        if value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = value
    parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def human_bytes(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"


@dataclass
class PreflightVerdict:
    ok: bool
    hosts: dict[str, Result]
    cluster: Result
    never_joined: list[int] = field(default_factory=list)
    timings: list[dict[str, Any]] = field(default_factory=list)


def _where(plan: LaunchPlan, ranks: Iterable[int]) -> str:
    """`node1 ranks 0-3, node2 ranks 4-5`."""
    by_host: dict[str, list[int]] = defaultdict(list)
    owner = {r.rank: n.host for n in plan.nodes for r in n.ranks}
    for rank in ranks:
        by_host[owner.get(rank, "?")].append(rank)
    return ", ".join(f"{host} ranks {spans(rs)}" for host, rs in by_host.items())


def _cause(plan: LaunchPlan, failed: list[dict[str, Any]], errors: Mapping[str, str]) -> tuple:
    """(likely cause, runbook) from the failed ranks' kinds and stages."""
    head = plan.node0.host
    store = f"{url_host(plan.rendezvous_address)}:{plan.rendezvous_port}"
    kinds = {r.get("kind") for r in failed if r.get("kind") != "aborted"}
    if "wrong_nic" in kinds:
        first = next(r for r in failed if r.get("kind") == "wrong_nic")
        return (
            f"{first.get('error')}: set `nic` to the interface that carries "
            f"{plan.rendezvous_address} (and its subnet on the other nodes)",
            RUNBOOK_RENDEZVOUS,
        )
    if "nodevice" in kinds:
        first = next(r for r in failed if r.get("kind") == "nodevice")
        return (f"{first.get('error')}: check device_hierarchy, device_ids and the driver",
                RUNBOOK_PREFLIGHT)  # fmt: skip
    if "addrinuse" in kinds:
        return (
            f"port {plan.rendezvous_port} on {head} ({plan.rendezvous_address}) is already in "
            "use: leftover ranks of an earlier run, or another service",
            RUNBOOK_PORT,
        )
    dropped = [r for r in failed if r.get("stage") == "connect" and r.get("kind") == "timeout"]
    if dropped:
        return (
            f"connecting to the rendezvous store {store} on {head} timed out: packets are "
            f"dropped (a firewall rule blocking port {plan.rendezvous_port} on {head}, or a "
            "wrong rendezvous address or NIC)",
            RUNBOOK_RENDEZVOUS,
        )
    if "refused" in kinds:
        return (
            f"nothing listens at {store}: rank 0 on {head} did not open the store (see its "
            f"error), or {plan.rendezvous_address} is not {head}'s address on the NIC",
            RUNBOOK_RENDEZVOUS,
        )
    if kinds & {"unreachable", "dns", "addrnotavail"}:
        return (
            f"{store} is not reachable from every node: wrong rendezvous address or NIC "
            f"(nic={plan.node0.env.get('GLOO_SOCKET_IFNAME', 'unset')})",
            RUNBOOK_RENDEZVOUS,
        )
    if "mismatch" in kinds:
        return (
            "all_reduce returned a wrong sum: the collective library is broken",
            RUNBOOK_PREFLIGHT,
        )
    if "timeout" in kinds:
        return (
            "ranks reached the store but the collective never connected: check the NIC "
            "variables (GLOO_SOCKET_IFNAME, CCL_KVS_IFACE, FI_TCP_IFACE) and the firewall "
            "between the nodes",
            RUNBOOK_RENDEZVOUS,
        )
    if errors:
        return ("the preflight could not run on every node", RUNBOOK_PREFLIGHT)
    return ("a preflight rank failed (see the node's preflight.log)", RUNBOOK_PREFLIGHT)


def judge_preflight(
    plan: LaunchPlan, reports: Mapping[str, dict[str, Any] | None], errors: Mapping[str, str]
) -> PreflightVerdict:
    """Every rank joined and the all_reduce was right, or who did not and why."""
    ranks: dict[int, dict[str, Any]] = {}
    host_of: dict[int, str] = {}
    timings: list[dict[str, Any]] = []
    for node in plan.nodes:
        doc = reports.get(node.host)
        for entry in (doc or {}).get("ranks", []):
            ranks[int(entry["rank"])] = entry
            host_of[int(entry["rank"])] = node.host
            timings = timings or entry.get("timings", [])
    expected = [r.rank for n in plan.nodes for r in n.ranks]
    missing_reports = [r for r in expected if r not in ranks]
    never_joined = sorted(
        {r for r, e in ranks.items() if not e.get("joined")}
        | set(ranks.get(0, {}).get("missing_ranks", []))
        | set(missing_reports)
    )
    failed = [e for e in ranks.values() if not e.get("ok")]
    hosts: dict[str, Result] = {}
    for node in plan.nodes:
        mine = [ranks[r.rank] for r in node.ranks if r.rank in ranks]
        bad = [e for e in mine if not e.get("ok")]
        if node.host in errors:
            hosts[node.host] = Result(
                "launch.preflight", FAIL, f"preflight did not run: {errors[node.host]}",
                RUNBOOK_PREFLIGHT,
            )  # fmt: skip
        elif bad or len(mine) < len(node.ranks):
            first = bad[0] if bad else {"error": "no report", "stage": "start"}
            hosts[node.host] = Result(
                "launch.preflight",
                FAIL,
                f"ranks {spans(int(e['rank']) for e in bad)} failed at {first.get('stage')}: "
                f"{first.get('error')}",
                RUNBOOK_PREFLIGHT,
                data={"ranks": mine},
            )
        else:
            devices = [e["device"] for e in mine if e.get("device")]
            joined = (
                "; devices "
                + ", ".join(f"xpu:{d['index']} (#{d.get('physical')})" for d in devices)
                if devices
                else ""
            )
            hosts[node.host] = Result(
                "launch.preflight",
                PASS,
                f"ranks {node.rank_span} joined {plan.dist_init_addr}{joined}; all_reduce correct",
                data={"ranks": mine, "devices": devices},
            )
    if not failed and not missing_reports and not errors:
        summary = "; ".join(
            f"{human_bytes(t['bytes'])} {t['time_us']:.0f} us busbw {t['busbw_gbps']:.3f} GB/s"
            for t in timings
        )
        cluster = Result(
            "launch.preflight",
            PASS,
            f"{plan.backend} all_reduce over {plan.tp} ranks on {plan.nnodes} node(s): {summary}",
            data={"timings": timings},
        )
        return PreflightVerdict(True, hosts, cluster, [], timings)
    cause, runbook = _cause(plan, failed, errors)
    joined_text = (
        f"{_where(plan, never_joined)} never joined" if never_joined else "every rank joined"
    )
    cluster = Result(
        "launch.preflight",
        FAIL,
        f"preflight failed: {joined_text}; likely cause: {cause}",
        runbook,
        data={"never_joined": never_joined},
    )
    return PreflightVerdict(False, hosts, cluster, never_joined, timings)


def first_death(statuses: Mapping[str, dict[str, Any] | None]) -> dict[str, Any] | None:
    """The earliest death any node's supervisor saw (not counting ranks it stopped)."""
    deaths = [s["first_death"] for s in statuses.values() if s and s.get("first_death")]
    return min(deaths, key=lambda d: float(d.get("died_at") or 0)) if deaths else None


def death_runbook(death: Mapping[str, Any]) -> str:
    text = " ".join(death.get("tail") or []).lower()
    return RUNBOOK_OOM if any(m in text for m in OOM_MARKERS) else RUNBOOK_RANK_CRASH


def describe_death(death: Mapping[str, Any]) -> str:
    what = death.get("what") or f"rank {death.get('rank')}"
    exit_text = (death.get("exit") or {}).get("text", "exited")
    text = f"{what} on {death.get('host')} (pid {death.get('pid')}) {exit_text}"
    if (death.get("exit") or {}).get("signal") == "SIGKILL":
        text += " (the kernel's OOM killer or someone's kill -9: check dmesg)"
    return text


def death_result(death: Mapping[str, Any]) -> Result:
    tail = death.get("tail") or []
    last = f"; last log line: {tail[-1].strip()}" if tail else ""
    return Result(
        "launch.first_death",
        FAIL,
        f"first to die: {describe_death(death)}; every rank on every node was stopped{last}",
        death_runbook(death),
        data={"death": dict(death)},
    )


def uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def rank_results(status: Mapping[str, Any], ready: bool | None) -> list[Result]:
    """One row per rank of a node's `supervisor.py status` document."""
    rows = []
    ready_text = {True: ", ready", False: ", not ready", None: ""}[ready]
    for entry in status.get("ranks", []):
        rank = entry["rank"]
        if entry.get("alive"):
            rows.append(
                Result(
                    f"status.rank.{rank}",
                    PASS,
                    f"running, pid {entry['pid']}, up {uptime(entry.get('uptime_s'))}{ready_text}",
                    data=dict(entry),
                )
            )
        else:
            exit_text = (entry.get("exit") or {}).get("text", "not running")
            stopped = entry.get("cause") == "stopped"
            rows.append(
                Result(
                    f"status.rank.{rank}",
                    SKIP if stopped else FAIL,
                    f"not running, pid {entry.get('pid')}: {exit_text}"
                    + (" (stopped by xpufleet)" if stopped else ""),
                    None if stopped else RUNBOOK_RANK_CRASH,
                    data=dict(entry),
                )
            )
    return rows


def helper_results(status: Mapping[str, Any]) -> list[Result]:
    """One row per helper process of the node's server (resource tracker, detokenizer,
    tokenizer manager, ...): named as such, never counted as a rank."""
    rows = []
    for entry in status.get("helpers") or []:
        role = str(entry.get("role") or "helper")
        name = f"status.helper.{role.replace(' ', '_')}"
        if entry.get("alive"):
            text = f"{role} (helper, not a rank): running, pid {entry['pid']}, "
            rows.append(Result(name, OK, text + f"up {uptime(entry.get('uptime_s'))}", data=entry))
            continue
        exit_text = (entry.get("exit") or {}).get("text", "not running")
        rows.append(
            Result(
                name,
                SKIP,
                f"{role} (helper, not a rank): not running, pid {entry.get('pid')}: {exit_text}",
                data=entry,
            )
        )
    return rows


def device_results(status: Mapping[str, Any]) -> list[Result]:
    """How the node's schedulers were tied to their ranks; a FAIL when the device each
    works on (xpu-smi ps) is not the one the plan gave its rank."""
    how, problem = status.get("identified_by"), status.get("device_problem")
    rows = []
    if problem:
        rows.append(
            Result(
                "status.devices",
                FAIL,
                f"a scheduler works on a device the plan did not give it: {problem}",
                RUNBOOK_DEVICE,
                data={"identified_by": how, "problem": problem},
            )
        )
    elif how:
        rows.append(Result("status.ranks", OK, f"ranks by {how}", data={"identified_by": how}))
    return rows


def describe_ports(ports: Iterable[Mapping[str, Any]]) -> list[str]:
    """`port 30000 on 127.0.4.1 (SGLang HTTP) is held by pid 12 (python -m ...)`."""
    busy = []
    for port in ports:
        for holder in port.get("holders", []):
            busy.append(
                f"port {port['port']} on {port['address']} ({port.get('what', '')}) is held by "
                f"pid {holder.get('pid')} ({holder.get('command', '').strip()[:80]})"
            )
    return busy


def hosts_text(names: Iterable[str]) -> str:
    return fold(list(names))
