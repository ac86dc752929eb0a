"""What every node-touching task shares: flags -> settings -> inventory -> hosts -> exit code."""

from __future__ import annotations

import dataclasses
import functools
import getpass
import inspect
import json
import os
import sys
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from invoke import Task, task
from invoke.exceptions import Exit
from rich.console import Console

from .. import sshconfig
from ..config import Settings
from ..errors import EXIT_INTERRUPTED, XpufleetError
from ..host import Host
from ..inventory import Inventory, load_inventory
from ..results import TaskReport
from ..table import render
from ..transport import SSHOptions

#: help texts of the flags every node-touching task takes
HOST_FLAGS_HELP = {
    "hosts": "inventory file (default from invoke.yaml: inventory/lab.yaml)",
    "limit": "host or group names/globs, Ansible patterns: a:b, a:&b, !a",
    "forks": "hosts worked on in parallel (default 32)",
    "json": "machine-readable result on stdout; human output goes to stderr",
}

#: the shared flags as a task's signature declares them (`node_task` puts them in)
HOST_FLAG_PARAMS = [
    inspect.Parameter(
        name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=hint
    )
    for name, default, hint in (
        ("hosts", None, str | None),
        ("limit", None, str | None),
        ("forks", None, int | None),
        ("json", False, bool),
    )
]


F = TypeVar("F", bound=Callable[..., Any])

#: wide enough for one-line messages when stderr is a file or pipe (CI logs, `2> log`)
console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


@dataclass
class TaskContext:
    settings: Settings
    inventory: Inventory
    hosts: list[Host]
    options: SSHOptions
    as_json: bool

    def emit(self, report: TaskReport, *, strict: bool = False, title: str | None = None) -> int:
        """`emit` with this task's --json."""
        return emit(report, as_json=self.as_json, strict=strict, title=title)


@dataclass(frozen=True)
class HostFlags:
    """The shared flags as given, for a task that opens its context itself (or not at all)."""

    hosts: str | None = None
    limit: str | None = None
    forks: int | None = None
    json: bool = False

    def open(self, c: Any, *, limit: str | None = None) -> TaskContext:
        """The task's context; `limit` stands in for --limit (a task without that flag)."""
        return open_context(
            c, hosts=self.hosts, limit=limit or self.limit, forks=self.forks, as_json=self.json
        )


def settings_from(c: Any, **flags: Any) -> Settings:
    return Settings.from_config(c.config.get("xpufleet", {}), **flags)


def ssh_options(settings: Settings) -> SSHOptions:
    return SSHOptions(
        known_hosts=settings.path(settings.known_hosts),
        key_file=str(settings.path(settings.key_file)) if settings.key_file else None,
        connect_timeout=float(settings.connect_timeout),
        command_timeout=float(settings.command_timeout),
    )


def open_context(
    c: Any,
    *,
    hosts: str | None = None,
    limit: str | None = None,
    forks: int | None = None,
    as_json: bool = False,
) -> TaskContext:
    """Validate every input before any host is touched (errors here exit 2)."""
    settings = settings_from(c, hosts=hosts, forks=forks)
    inventory = load_inventory(settings.path(settings.hosts))
    for warning in inventory.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    selected = sshconfig.apply_all(inventory.select(limit), ssh_config_path(settings))
    for host in selected:
        host.var  # noqa: B018 -- resolve (render, type) now: a bad value exits 2 here
    options = ssh_options(settings)
    if any(h.become for h in selected):
        options = dataclasses.replace(options, become_password=become_password(selected))
    return TaskContext(settings, inventory, selected, options, as_json)


#: where the sudo password of hosts with ansible_become comes from (never the inventory)
BECOME_PASSWORD_ENV = "XPUFLEET_BECOME_PASSWORD"


def become_password(hosts: list[Host]) -> str | None:
    """The sudo password: the environment variable, else a prompt on a terminal, else None
    (then sudo must not ask: NOPASSWD, or the task names the host that needed one)."""
    value = os.environ.get(BECOME_PASSWORD_ENV)
    if value is not None:
        return value
    if sys.stdin.isatty():
        users = ", ".join(sorted({h.user for h in hosts if h.become}))
        return getpass.getpass(f"sudo password for {users} (empty: none needed): ") or None
    return None


def ssh_config_path(settings: Settings) -> str | None:
    """The ssh_config file to read, None when the setting (or XPUFLEET_SSH_CONFIG) is none."""
    value = os.environ.get("XPUFLEET_SSH_CONFIG") or settings.ssh_config
    if not value or value.strip().lower() == sshconfig.NONE:
        return None
    return str(settings.path(value))


def emit(
    report: TaskReport, *, as_json: bool, strict: bool = False, title: str | None = None
) -> int:
    """Print the report (table to stderr; JSON to stdout if asked) and return the exit code."""
    if as_json:
        json.dump(report.to_json(), sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
        sys.stdout.flush()
    else:
        render(report, console, title=title)
    return report.exit_code(strict=strict)


def node_task(
    *,
    help: dict[str, str] | None = None,
    flags: tuple[str, ...] = tuple(HOST_FLAGS_HELP),
    **options: Any,
) -> Callable[[Callable[..., int]], Task[Any]]:
    """`@task` + `@exits` for a task that works on hosts. Where the function takes `ctx`
    (a TaskContext, opened before the body runs) or `flags` (HostFlags), the command line
    takes the shared `flags` (--hosts --limit --forks --json), their help from
    HOST_FLAGS_HELP unless `help` gives another; `options` go to `@task`."""

    def decorate(func: Callable[..., int]) -> Task[Any]:
        signature = inspect.signature(func)
        hints = typing.get_type_hints(func)
        slot = "ctx" if "ctx" in signature.parameters else "flags"
        if slot not in signature.parameters:
            raise TypeError(f"node task {func.__name__} takes neither ctx nor flags")
        params: list[inspect.Parameter] = []
        for param in signature.parameters.values():
            if param.name == slot:
                params += [p.replace(kind=param.kind) for p in HOST_FLAG_PARAMS if p.name in flags]
            else:
                params.append(param.replace(annotation=hints.get(param.name, param.annotation)))
        cli = signature.replace(parameters=params, return_annotation=int)

        @functools.wraps(func)
        def body(*args: Any, **kwargs: Any) -> int:
            given = cli.bind(*args, **kwargs).arguments
            shared = HostFlags(**{name: given.pop(name) for name in flags if name in given})
            given[slot] = shared.open(args[0]) if slot == "ctx" else shared
            return func(**given)

        body.__signature__ = cli  # type: ignore[attr-defined]  # what invoke reads
        hinted = {p.name: p.annotation for p in params if p.annotation is not p.empty}
        body.__annotations__ = hinted | {"return": int}  # resolved: program.py reads them
        shared_help = {name: HOST_FLAGS_HELP[name] for name in flags}
        return task(help={**shared_help, **(help or {})}, **options)(exits(body))

    return decorate


def exits(func: F) -> F:
    """Turn xpufleet errors and Ctrl-C into the SPEC's exit codes with a clear message."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            code = func(*args, **kwargs)
        except XpufleetError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise Exit(code=exc.exit_code) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            raise Exit(code=EXIT_INTERRUPTED) from None
        if code:
            raise Exit(code=int(code))
        return None

    return wrapper  # type: ignore[return-value]


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
