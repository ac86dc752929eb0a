"""Typed results of a task: per-host items, cluster items, summary, exit code, JSON shape.

The JSON shape is the SPEC's contract: {"task", "hosts": {HOST: {"reachable", "results"}},
"cluster", "summary"}. Ids are stable dotted names.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .errors import EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, HostError, UnreachableError

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
OK, CHANGED, FAILED = "ok", "changed", "failed"
STATUSES = (FAIL, FAILED, WARN, CHANGED, PASS, OK, SKIP)
FAILING = frozenset({FAIL, FAILED})

#: sort rank so that failures come first in tables
SEVERITY = {status: rank for rank, status in enumerate(STATUSES)}


@dataclass
class Result:
    """One check or step outcome on one host (or on the cluster)."""

    id: str
    status: str
    message: str
    runbook: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in SEVERITY:
            raise ValueError(f"unknown status {self.status!r} for {self.id}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "status": self.status,
            "message": self.message,
            "runbook": self.runbook,
        }
        if self.data:
            out["data"] = self.data
        return out


@dataclass
class HostReport:
    """Everything a task learned about one host."""

    reachable: bool = True
    results: list[Result] = field(default_factory=list)
    #: why the host was unreachable (or why the task stopped on it), one line
    error: str | None = None
    error_kind: str | None = None

    def add_error(self, error: HostError, result_id: str, status: str = FAILED) -> None:
        """What stopped the work on this host: an unreachable host's error line, or (it
        answered) a `result_id` result."""
        if isinstance(error, UnreachableError):
            self.reachable = False
            self.error, self.error_kind = error.message, error.kind
        else:
            self.results.append(Result(result_id, status, error.message))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reachable": self.reachable,
            "results": [r.to_json() for r in self.results],
        }
        if self.error:
            out["error"] = self.error
            out["error_kind"] = self.error_kind
        return out


@dataclass
class TaskReport:
    """A task's whole outcome; exit code and JSON derive from it."""

    task: str
    hosts: dict[str, HostReport] = field(default_factory=dict)
    cluster: list[Result] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def all_results(self) -> list[Result]:
        items = [r for h in self.hosts.values() for r in h.results]
        return items + list(self.cluster)

    def summary(self) -> dict[str, int]:
        counts = Counter(r.status for r in self.all_results())
        unreachable = sum(1 for h in self.hosts.values() if not h.reachable)
        if unreachable:
            counts["unreachable"] = unreachable
        return dict(sorted(counts.items(), key=lambda kv: SEVERITY.get(kv[0], -1)))

    def exit_code(self, *, strict: bool = False) -> int:
        """SPEC exit codes: 1 if anything failed, else 3 if hosts were unreachable, else 0."""
        statuses = {r.status for r in self.all_results()}
        failed_hosts = any(h.reachable and h.error for h in self.hosts.values())
        if statuses & FAILING or failed_hosts or (strict and WARN in statuses):
            return EXIT_FAILED
        if any(not h.reachable for h in self.hosts.values()):
            return EXIT_UNREACHABLE
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "task": self.task,
            "hosts": {name: h.to_json() for name, h in self.hosts.items()},
            "cluster": [r.to_json() for r in self.cluster],
            "summary": self.summary(),
        }
        doc.update(self.extra)
        return doc
