"""The doctor probe over Slurm: ONE srun step for all selected nodes of an allocation.

Every task gets the same stdin (srun broadcasts it): the probe's source once and each
node's parameters, picked by the node's own name (facts.probe.build_node_script). A
node whose task reported nothing (a node down makes srun refuse the whole step) is
probed again in a step of its own, so the failing node is the one named.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..errors import HostError, UnreachableError
from ..executor import Outcome
from ..host import Host
from ..slurm import NODE_VAR, SlurmSession, fan_out_step, group_by_allocation, parallel
from ..transport import SSHOptions
from .probe import (
    PROBE_TIMEOUT_S,
    ProbeOutput,
    build_node_script,
    probe_output,
    probe_params,
    run_probe,
)


def gather_over_slurm(
    hosts: Sequence[Host],
    peers: Sequence[Host],
    options: SSHOptions,
    *,
    forks: int,
    on_done: Callable[[Outcome[ProbeOutput]], None] | None = None,
) -> dict[str, Outcome[ProbeOutput]]:
    """Probe `hosts` (connector slurm) with one srun per allocation; `peers` as in doctor."""
    outcomes: dict[str, Outcome[ProbeOutput]] = {}

    def done(outcome: Outcome[ProbeOutput]) -> None:
        outcomes[outcome.host.name] = outcome
        if on_done:
            on_done(outcome)

    def alone(host: Host) -> Outcome[ProbeOutput]:
        try:
            session = SlurmSession(host, options)
            return Outcome(host, value=run_probe(session, probe_params(host, peers)))
        except HostError as exc:
            return Outcome(host, error=exc)

    for group in group_by_allocation(hosts):
        params = {h.name: probe_params(h, peers) for h in group}
        script = build_node_script(params, NODE_VAR)
        step = fan_out_step(group, script.text.encode(), timeout=PROBE_TIMEOUT_S)
        missing: list[Host] = []
        for host in group:
            node = step.nodes.get(host.name)
            if node is None:
                missing.append(host)
                continue
            output = probe_output(
                host.name,
                script,
                node.stdout,
                node.stderr,
                node.status,
                sent=step.sent,
                received=node.received,
                round_trips=1,
            )
            done(Outcome(host, value=output))

        if missing and len(group) == 1:
            why = "; ".join(step.srun_errors) or f"srun ended with {step.status}"
            done(Outcome(missing[0], error=UnreachableError(missing[0].name, why)))
        elif missing:
            for outcome in parallel(alone, missing, forks):
                done(outcome)
    return outcomes
