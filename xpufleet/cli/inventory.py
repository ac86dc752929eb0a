"""`invoke inventory`: what xpufleet makes of an inventory, before anything touches a node.

The `--json` document is `ansible-inventory --list`'s shape (not a TaskReport), so the
two tools can be diffed directly; the human view folds identical values across hosts.
"""

from __future__ import annotations

import datetime
import json as jsonlib
import sys
from collections import defaultdict
from typing import Any

from rich.table import Table
from rich.tree import Tree

from ..host import Host
from ..inventory import Inventory
from ..nodeset import fold
from ..variables import VARIABLES
from .common import TaskContext, console, node_task, relative


def _json_default(value: Any) -> str:
    """YAML dates/times print as ISO strings, as ansible-inventory prints them."""
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)


def _compact(value: Any) -> str:
    return jsonlib.dumps(value, default=_json_default, ensure_ascii=False)


def hosts_table(hosts: list[Host]) -> Table:
    table = Table(title="hosts", title_justify="left")
    for column in ("host", "address", "user", "key file", "groups"):
        table.add_column(column)
    for host in hosts:
        table.add_row(
            host.name,
            f"{host.address}:{host.port}",
            host.user,
            host.key_file or "-",
            ", ".join(host.groups),
        )
    return table


def groups_tree(inventory: Inventory, selected: set[str]) -> Tree:
    """all -> children -> hosts; a group seen twice is shown once in full."""
    shown: set[str] = set()

    def add(branch: Tree, name: str) -> None:
        group = inventory.groups[name]
        node = branch.add(f"[bold]@{name}[/]")
        if name in shown:
            return
        shown.add(name)
        for child in group.children:
            add(node, child)
        hosts = [h for h in group.hosts if h in selected]
        if hosts and name != "all":
            node.add(fold(hosts))

    root = Tree("[bold]@all[/]")
    for child in inventory.groups["all"].children:
        add(root, child)
    return root


def variables_table(hosts: list[Host]) -> Table:
    """One row per variable and value; hosts sharing it folded (node[1-4]).

    xpufleet variables nobody set are listed with their registry default, dimmed,
    so the table shows everything a role or the planner will read.
    """
    rows: dict[tuple[str, str], list[str]] = defaultdict(list)
    for host in hosts:
        for name, value in host.vars.items():
            rows[(name, _compact(value))].append(host.name)
    table = Table(title="variables (merged, Ansible precedence)", title_justify="left")
    for column in ("variable", "value", "hosts"):
        table.add_column(column, overflow="fold")
    set_names = {name for name, _ in rows}
    for (name, value), names in sorted(rows.items()):
        table.add_row(name, value, fold(names))
    for name, spec in sorted(VARIABLES.items()):
        if name not in set_names:
            table.add_row(f"[dim]{name}[/]", f"[dim]{_compact(spec.default)}[/]", "[dim]default[/]")
    return table


@node_task(
    flags=("hosts", "limit", "json"),
    help={"json": "print `ansible-inventory --list`'s JSON document on stdout"},
)
def inventory(c: Any, ctx: TaskContext) -> int:
    """Show hosts, groups and every host's merged variables as xpufleet resolves them."""
    names = [h.name for h in ctx.hosts]
    if ctx.as_json:
        document = ctx.inventory.to_ansible_list(only=names)
        sys.stdout.write(
            jsonlib.dumps(document, sort_keys=True, indent=4, default=_json_default) + "\n"
        )
        sys.stdout.flush()
        return 0
    console.print(f"inventory: {relative(ctx.inventory.path)}", highlight=False)
    console.print(hosts_table(ctx.hosts))
    console.print(groups_tree(ctx.inventory, set(names)))
    console.print(variables_table(ctx.hosts))
    return 0


TASKS = [inventory]
