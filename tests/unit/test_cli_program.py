"""A bad flag value is bad input: one line naming the flag and its type, exit 2, nothing run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from xpufleet.cli import program
from xpufleet.cli.namespace import build
from xpufleet.cli.program import Program

INVOKE = str(Path(sys.executable).parent / "invoke")
ROOT = Path(__file__).resolve().parents[2]


def test_invoke_in_a_checkout_refuses_a_bad_flag_value_before_the_task_runs() -> None:
    # the inventory does not exist: had the task run, the error would be about it
    done = subprocess.run(
        [INVOKE, "launch", "--tp", "eight", "--hosts", "/nonexistent/inventory.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --tp takes a whole number (int), got 'eight'"
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["launch", "--tp", "8", "--nnodes", "two"], "--nnodes takes a whole number (int)"),
        (["logs", "--lines", "x"], "--lines takes a whole number (int), got 'x'"),
        (["doctor", "--forks", "many"], "--forks takes a whole number (int)"),
        (["provision", "--max-fail-percentage", "lots"], "--max-fail-percentage takes a number"),
        (["build", "--host", "node1", "--timeout", "soon"], "--timeout takes a number (float)"),
        (["launch", "--tp", "8", "--nope", "1"], "error: No idea what '--nope' is!"),
        (["launch"], "error: 'launch' did not receive required positional arguments: 'tp'"),
    ],
)
def test_the_program_makes_every_parse_error_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        Program(namespace=build(), name="xpufleet", binary="xpufleet").run(["xpufleet", *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_good_values_arrive_converted() -> None:
    task = dict(build().tasks)["launch"]
    args = {a.name: a for a in task.get_arguments()}
    args["tp"].value = "8"
    args["forks"].value = "4"
    assert (args["tp"].value, args["forks"].value, args["nnodes"].value) == (8, 4, None)


def test_every_task_is_typed() -> None:
    def walk(collection):  # type: ignore[no-untyped-def]
        yield from collection.tasks.values()
        for sub in collection.collections.values():
            yield from walk(sub)

    loose = [t.name for t in walk(build()) if not isinstance(t, program.Task)]
    assert loose == []


def test_node_tasks_take_the_shared_flags_where_ctx_stands() -> None:
    """Short flags follow the order of the signature: the shared flags keep theirs."""
    tasks = dict(build().tasks)

    def flags(name: str) -> list[tuple[str, ...]]:
        return [tuple(a.names) for a in tasks[name].get_arguments()]

    shared = [("hosts", "h"), ("limit", "l"), ("forks", "f"), ("json", "j")]
    assert flags("doctor")[:4] == shared
    assert flags("launch")[-4:] == [("hosts", "h"), ("limit",), ("forks", "f"), ("json", "j")]
    assert flags("build")[-3:] == [("hosts", "o"), ("forks", "f"), ("json", "j")]  # no --limit


def test_a_node_task_gets_the_context_its_flags_open(capsys: pytest.CaptureFixture[str]) -> None:
    from invoke import Config, Context

    task = dict(build().tasks)["inventory"]
    hosts = str(ROOT / "inventory" / "lab.yaml")
    task(Context(Config(overrides={"xpufleet": {}})), hosts=hosts, limit="node2", json=True)
    document = json.loads(capsys.readouterr().out)
    assert sorted(document["_meta"]["hostvars"]) == ["node2"]
