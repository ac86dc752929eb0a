"""Plan-then-apply over hosts: one batched probe per host, then only what differs.

Per host: take the node lock, run the probe snippets of ALL steps in one remote
command, decide each step (pure), apply the changed ones in order. A step that
changes the environment (venv, packages, wheels) makes the later steps' probe
stale, so the rest is probed again (one more round trip, only on hosts that
changed). A failed step names itself with the stderr tail and stops that host only;
`--fail-fast` / `max_fail_percentage` stop the other hosts between steps.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

from .. import shell
from ..errors import HostError, UnreachableError
from ..executor import SessionPool, connect
from ..facts.batch import new_boundary, probe_script, split_probe
from ..host import Host
from ..relay.batch import FileRelay
from ..results import CHANGED, FAILED, OK, SKIP, HostReport, Result, TaskReport
from ..transport import Session, SSHOptions
from .context import ApplyContext, TransferFactory, no_progress
from .lock import NodeLock, acquire_lock, release_lock
from .steps import Decision, Step

RUNBOOK = "docs/runbooks/provision.md"
#: the runbook sections a provision failure can point at (headings of RUNBOOK)
ANCHORS = (
    "wheel-hash-mismatch",
    "interrupted-transfer",
    "lock-held",
    "pip-conflicts",
    "failed-step",
    "sudo-needs-a-password",
)


def runbook_links() -> list[str]:
    """Every runbook link this module can print (checked by tests/unit/test_runbook_links)."""
    return [f"{RUNBOOK}#{anchor}" for anchor in ANCHORS]


@dataclass(frozen=True)
class ProvisionOptions:
    check: bool = False
    diff: bool = False
    fail_fast: bool = False
    #: abort the run once more than this share of hosts failed (Ansible's keyword)
    max_fail_percentage: float | None = None
    #: probe timeout per host (seconds)
    probe_timeout: float = 120.0


# -- the batched probe: facts.batch, the project's one probe mechanism ---------------


def run_probe(session: Session, steps: list[Step], timeout: float) -> list[str]:
    if not steps:
        return []
    boundary = new_boundary()
    script = probe_script([s.probe() for s in steps], boundary)
    out = session.run("sh -s", stdin=script, timeout=timeout, check=False).stdout
    return split_probe(out, boundary, len(steps))


# -- one host --------------------------------------------------------------------------


@dataclass
class Abort:
    """Shared across hosts: set once the failure budget is spent."""

    event: threading.Event = field(default_factory=threading.Event)
    reason: str = ""

    def set(self, reason: str) -> None:
        if not self.event.is_set():
            self.reason = reason
            self.event.set()

    @property
    def is_set(self) -> bool:
        return self.event.is_set()


def _step_failed(step: Step, action: str, exc: HostError) -> Result:
    message = f"{action}: {exc.message}" if action else exc.message
    return Result(step.id, FAILED, message, runbook=f"{RUNBOOK}#{anchor_for(exc)}")


def anchor_for(exc: HostError) -> str:
    """The runbook section of a failure: the error's own (its class knows), else the
    catch-all section."""
    return exc.anchor if exc.anchor in ANCHORS else "failed-step"


def provision_host(
    session: Session,
    steps: list[Step],
    options: ProvisionOptions,
    abort: Abort,
    transfers: TransferFactory = no_progress,
    relay: FileRelay | None = None,
) -> tuple[list[Result], int]:
    """Apply `steps` on one host; returns its results and the wheel bytes sent."""
    results: list[Result] = []
    sent = 0
    lock = None if options.check else acquire_lock(session, "provision")
    try:
        states = run_probe(session, steps, options.probe_timeout)
        index = 0
        while index < len(steps):
            step = steps[index]
            if abort.is_set:
                results += [Result(s.id, SKIP, f"not run: {abort.reason}") for s in steps[index:]]
                break
            decision: Decision = step.decide(states[index], diff=options.diff)
            data = {"diff": decision.diff} if decision.diff else {}
            if not decision.needs_change:
                results.append(Result(step.id, decision.status, decision.message, data=data))
                index += 1
                if decision.status == FAILED:
                    results[-1].runbook = f"{RUNBOOK}#failed-step"
                    results += _skipped_after(step, steps[index:])
                    break
                continue
            if options.check:
                results.append(Result(step.id, CHANGED, f"would {decision.message}", data=data))
                index += 1
                continue
            ctx = ApplyContext(session, states[index], transfers, relay=relay)
            try:
                detail = step.apply(ctx)
            except HostError as exc:
                sent += ctx.bytes_sent
                results.append(_step_failed(step, decision.message, exc))
                results += _skipped_after(step, steps[index + 1 :])
                break
            sent += ctx.bytes_sent
            message = decision.message + (f" ({detail})" if detail else "")
            results.append(Result(step.id, CHANGED, message, data=data))
            index += 1
            if step.reprobe and index < len(steps):
                states = states[:index] + run_probe(session, steps[index:], options.probe_timeout)
    finally:
        if lock is not None:
            _release(session, lock)
    return results, sent


def hand_over_state_dir(session: Session) -> None:
    """After a provision under become: the login user owns `<state_dir>` and its runs/,
    so launch and stop (which run as the login user) can take the lock and write runs."""
    state = session.host.var.state_dir.rstrip("/")
    user = shell.quote(session.host.user)
    runs = shell.quote(f"{state}/runs")
    session.run(f"mkdir -p {runs} && chown {user} {shell.quote(state)} {runs}")


def _release(session: Session, lock: NodeLock) -> None:
    """Release the lock, over a fresh connection if the task's one was cut off."""
    try:
        release_lock(session, lock)
        return
    except HostError:
        pass
    with contextlib.suppress(HostError), connect(session.host, session.options) as fresh:
        release_lock(fresh, lock)


def _skipped_after(failed: Step, rest: list[Step]) -> list[Result]:
    return [Result(s.id, SKIP, f"not run: {failed.id} failed") for s in rest]


# -- all hosts -------------------------------------------------------------------------


def failure_budget_spent(failed: int, total: int, options: ProvisionOptions) -> bool:
    """Ansible semantics: abort when MORE than max_fail_percentage of hosts failed."""
    if failed == 0 or total == 0:
        return False
    if options.fail_fast:
        return True
    if options.max_fail_percentage is None:
        return False
    return failed * 100.0 / total > options.max_fail_percentage


def provision(
    plans: dict[str, tuple[Host, list[Step]]],
    ssh_options: SSHOptions,
    *,
    forks: int,
    options: ProvisionOptions,
    transfers: TransferFactory = no_progress,
    task: str = "provision",
) -> TaskReport:
    """Run every host's steps in parallel (at most `forks` at once) -> one TaskReport."""
    report = TaskReport(task)
    abort = Abort()
    failed_hosts: set[str] = set()
    guard = threading.Lock()
    total = len(plans)
    sent_total = 0
    steps_of = {name: steps for name, (_host, steps) in plans.items()}
    relay = FileRelay(min(total, forks))

    def note_failure(name: str) -> None:
        with guard:
            failed_hosts.add(name)
            if failure_budget_spent(len(failed_hosts), total, options):
                who = ", ".join(sorted(failed_hosts))
                why = "--fail-fast" if options.fail_fast else "max_fail_percentage"
                abort.set(f"aborted ({why}) after failures on {who}")

    def work(session: Session) -> tuple[list[Result], int]:
        steps = steps_of[session.host.name]
        if abort.is_set:
            return [Result(s.id, SKIP, f"not run: {abort.reason}") for s in steps], 0
        relay.arrive()  # a relay batch waits for the hosts still working, no longer
        try:
            # ansible_become: every step runs through sudo (Ansible's play-level become)
            elevated = getattr(session, "elevated", None)  # the slurm connector has none
            with elevated() if elevated else contextlib.nullcontext():
                results, sent = provision_host(session, steps, options, abort, transfers, relay)
                if elevated and session.host.become and not options.check:
                    hand_over_state_dir(session)
        except HostError as exc:
            note_failure(session.host.name)
            raise exc
        finally:
            relay.leave()
        if any(r.status == FAILED for r in results):
            note_failure(session.host.name)
        return results, sent

    hosts = [host for host, _steps in plans.values()]
    with SessionPool(hosts, ssh_options, forks) as pool:

        def on_done(outcome: object) -> None:
            error = getattr(outcome, "error", None)
            if isinstance(error, UnreachableError):
                note_failure(outcome.host.name)  # type: ignore[attr-defined]

        outcomes = pool.map(work, on_done=on_done)
    for name, outcome in outcomes.items():
        host_report = HostReport(reachable=outcome.reachable)
        if outcome.error is not None:
            host_report.error = outcome.error.message
            host_report.error_kind = outcome.error.kind
            if outcome.reachable:
                step_id = "provision.lock" if outcome.error.kind == "locked" else "provision.host"
                link = f"{RUNBOOK}#{anchor_for(outcome.error)}"
                host_report.results.append(Result(step_id, FAILED, outcome.error.message, link))
                host_report.error = None
        elif outcome.value is not None:
            results, sent = outcome.value
            host_report.results = results
            sent_total += sent
        report.hosts[name] = host_report
    report.extra["bytes_sent"] = sent_total
    report.extra["check"] = options.check
    return report


__all__ = ["OK", "ApplyContext", "ProvisionOptions", "provision", "provision_host"]
