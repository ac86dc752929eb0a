"""Every task of `invoke --list` has a docstring and help for each flag; node tasks share flags."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from invoke import Collection, Task

from xpufleet.cli.namespace import build

#: tasks that touch nodes take the SPEC's common flags
NODE_TASKS = {"run", "trust", "doctor", "provision", "launch", "status", "stop", "logs", "bench"}
COMMON_FLAGS = {"hosts", "limit", "forks", "json"}


def walk(collection: Collection, prefix: str = "") -> Iterator[tuple[str, Task]]:
    for name, task in collection.tasks.items():
        yield prefix + name, task
    for name, sub in collection.collections.items():
        yield from walk(sub, f"{prefix}{name}.")


TASKS = dict(walk(build()))


def test_the_spec_tasks_exist() -> None:
    expected = NODE_TASKS | {"inventory", "build", "demo", "lab.up", "lab.down", "lab.status"}
    assert expected <= set(TASKS)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_is_documented(name: str) -> None:
    task = TASKS[name]
    assert (task.__doc__ or task.body.__doc__ or "").strip(), f"{name} has no docstring"
    undocumented = [arg.name for arg in task.get_arguments() if not arg.help]
    assert undocumented == [], f"{name}: flags without help: {undocumented}"


@pytest.mark.parametrize("name", sorted(NODE_TASKS))
def test_node_tasks_take_the_common_flags(name: str) -> None:
    flags = {arg.name for arg in TASKS[name].get_arguments()}
    assert COMMON_FLAGS <= flags, f"{name} lacks {COMMON_FLAGS - flags}"
