"""`invoke doctor`: one probe per host in parallel, node checks, then cluster checks.

The whole fact gathering is one remote command per host (xpufleet.facts.probe), so
doctor costs one SSH round trip per node however many facts it checks; every
judgement is a pure function in xpufleet.checks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from .checks.cluster import run_cluster_checks
from .checks.node import Expect, probe_failed, run_node_checks
from .errors import stderr_tail
from .executor import Outcome, SessionPool
from .facts.node import NodeFacts, parse_facts
from .facts.probe import ProbeOutput, probe_params, run_probe
from .facts.probe_slurm import gather_over_slurm
from .host import Host
from .results import HostReport, TaskReport
from .slurm import is_slurm
from .transport import Session, SSHOptions

SIMULATED_NOTE = (
    "(simulated): the lab simulates this fact (Intel GPU tools, sysfs, oneAPI tree, "
    "torch.xpu); nothing here ran on Intel hardware."
)


def gather(
    hosts: Sequence[Host],
    options: SSHOptions,
    *,
    forks: int,
    on_done: Callable[[Outcome[ProbeOutput]], None] | None = None,
) -> dict[str, Outcome[ProbeOutput]]:
    """Run the probe on every host (at most `forks` at once): one round trip each."""

    def work(session: Session) -> ProbeOutput:
        return run_probe(session, probe_params(session.host, hosts))

    over_slurm = [h for h in hosts if is_slurm(h)]
    over_ssh = [h for h in hosts if not is_slurm(h)]
    outcomes: dict[str, Outcome[ProbeOutput]] = {}
    if over_slurm:  # one srun for all of them, not one step per host
        outcomes.update(gather_over_slurm(over_slurm, hosts, options, forks=forks, on_done=on_done))
    if over_ssh:
        with SessionPool(over_ssh, options, forks) as pool:
            outcomes.update(pool.map(work, on_done=on_done))
    return {h.name: outcomes[h.name] for h in hosts}


def host_report(
    host: Host, outcome: Outcome[ProbeOutput], node0: Host | None
) -> tuple[HostReport, NodeFacts | None]:
    """A host's results from its probe (or why there are none)."""
    report = HostReport(reachable=outcome.reachable)
    if outcome.error is not None:
        if outcome.reachable:
            report.results.append(probe_failed(f"probe did not run: {outcome.error.message}"))
        else:
            report.error = outcome.error.message
            report.error_kind = outcome.error.kind
        return report, None
    output = outcome.value
    assert output is not None
    if output.raw is None:
        tail = stderr_tail(output.stderr) or "no stderr"
        report.results.append(probe_failed(f"{output.error} (exit {output.exit_status}): {tail}"))
        return report, None
    try:
        facts = parse_facts(host.name, output.raw, sent=output.sent, received=output.received)
    except Exception as exc:  # noqa: BLE001 - a malformed answer is this host's failure
        report.results.append(probe_failed(f"probe answer unreadable: {exc!r}"))
        return report, None
    report.results.extend(run_node_checks(facts, Expect.from_host(host, node0)))
    return report, facts


def run_doctor(
    hosts: Sequence[Host],
    options: SSHOptions,
    *,
    forks: int = 32,
    tp: int | None = None,
) -> TaskReport:
    """Gather, check every node, check the cluster; the report carries round-trip counts."""
    began = time.monotonic()
    outcomes = gather(hosts, options, forks=forks)
    node0 = hosts[0] if hosts else None
    report = TaskReport("doctor")
    facts_by_host: dict[str, NodeFacts] = {}
    round_trips: dict[str, int] = {}
    for host in hosts:
        outcome = outcomes[host.name]
        report.hosts[host.name], facts = host_report(host, outcome, node0)
        if facts is not None:
            facts_by_host[host.name] = facts
        if outcome.value is not None:
            round_trips[host.name] = outcome.value.round_trips
    report.cluster, per_node = run_cluster_checks(facts_by_host, hosts, tp=tp)
    for name, item in per_node.items():
        if name in facts_by_host:
            report.hosts[name].results.append(item)
    simulated = sorted(h for h, f in facts_by_host.items() if f.simulated is not None)
    doctor: dict[str, Any] = {
        "seconds": round(time.monotonic() - began, 3),
        "round_trips": round_trips,
        "simulated_hosts": simulated,
    }
    if simulated:
        doctor["note"] = SIMULATED_NOTE
    report.extra["doctor"] = doctor
    return report
