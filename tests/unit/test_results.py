"""Exit codes, summary and JSON shape of task reports; node-set folding; error messages."""

from __future__ import annotations

import pytest

from xpufleet.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    CommandFailed,
    InventoryError,
)
from xpufleet.nodeset import fold
from xpufleet.results import HostReport, Result, TaskReport
from xpufleet.table import folded_rows


def report_with(*host_items: tuple[str, bool, list[Result]]) -> TaskReport:
    report = TaskReport("doctor")
    for name, reachable, results in host_items:
        report.hosts[name] = HostReport(reachable=reachable, results=results)
    return report


def test_exit_code_zero_when_only_passes_and_warnings() -> None:
    report = report_with(
        ("node1", True, [Result("a", "pass", "fine"), Result("b", "warn", "hm")]),
    )
    assert report.exit_code() == EXIT_OK
    assert report.exit_code(strict=True) == EXIT_FAILED


def test_exit_code_failure_beats_unreachable() -> None:
    report = report_with(
        ("node1", True, [Result("a", "fail", "broken")]),
        ("node2", False, []),
    )
    assert report.exit_code() == EXIT_FAILED


def test_exit_code_three_when_only_unreachable() -> None:
    report = report_with(("node1", True, [Result("a", "pass", "ok")]), ("node2", False, []))
    assert report.exit_code() == EXIT_UNREACHABLE
    assert report.summary() == {"pass": 1, "unreachable": 1}


def test_cluster_failure_counts() -> None:
    report = report_with(("node1", True, [Result("a", "pass", "ok")]))
    report.cluster.append(Result("cluster.versions", "fail", "node1 differs"))
    assert report.exit_code() == EXIT_FAILED


def test_json_shape_follows_spec() -> None:
    report = report_with(("node1", True, [Result("gpu.driver", "pass", "i915", "x.md#a")]))
    doc = report.to_json()
    assert doc["task"] == "doctor"
    item = doc["hosts"]["node1"]["results"][0]
    assert item == {"id": "gpu.driver", "status": "pass", "message": "i915", "runbook": "x.md#a"}
    assert doc["hosts"]["node1"]["reachable"] is True
    assert doc["cluster"] == []
    assert doc["summary"] == {"pass": 1}


def test_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError):
        Result("a", "great", "no such status")


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["node1", "node2", "node3"], "node[1-3]"),
        (["node1", "node3", "node4"], "node[1,3-4]"),
        (["node01", "node02", "node10"], "node[01-02,10]"),
        (["gpu1", "node2", "head"], "gpu1,node2,head"),
        (["node7"], "node7"),
    ],
)
def test_fold(names: list[str], expected: str) -> None:
    assert fold(names) == expected


def test_identical_results_fold_into_one_row_failures_first() -> None:
    same = Result("gpu.driver", "pass", "i915 loaded")
    report = report_with(
        ("node1", True, [same]),
        ("node2", True, [Result("gpu.driver", "pass", "i915 loaded")]),
        ("node3", True, [Result("gpu.driver", "fail", "no driver")]),
    )
    rows = folded_rows(report)
    assert [(nodes, r.status) for nodes, _, r in rows] == [("node3", "fail"), ("node[1-2]", "pass")]


def test_input_error_names_file_line_and_key() -> None:
    exc = InventoryError("unknown variable", file="inv.yaml", line=7, key="nics")
    assert str(exc) == "inv.yaml:7: key 'nics': unknown variable"
    assert exc.exit_code == EXIT_BAD_INPUT


def test_command_failed_keeps_stderr_tail() -> None:
    exc = CommandFailed("node1", "false", 3, "line1\n\nline2\nboom\n")
    assert exc.message == "command exited 3: line1 | line2 | boom"
    assert exc.exit_code == EXIT_FAILED


def test_passes_fold_across_host_details_failures_do_not() -> None:
    report = report_with(
        ("node1", True, [Result("clock.offset", "pass", "found +0.01 s")]),
        ("node2", True, [Result("clock.offset", "pass", "found +0.03 s")]),
        ("node3", True, [Result("clock.offset", "fail", "found +300 s")]),
        ("node4", True, [Result("clock.offset", "fail", "found +200 s")]),
    )
    rows = [(nodes, r.status, r.message) for nodes, _, r in folded_rows(report)]
    assert rows == [
        ("node3", "fail", "found +300 s"),
        ("node4", "fail", "found +200 s"),
        ("node[1-2]", "pass", "node1: found +0.01 s (others alike)"),
    ]
