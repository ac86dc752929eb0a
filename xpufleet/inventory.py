"""Ansible YAML inventories, resolved the way ansible-core resolves them, and validated.

An existing Ansible inventory works unchanged: `all`/`children`/`hosts`/`vars`,
top-level groups, host ranges (`node[01:04]`), `host:port`, `group_vars/` and
`host_vars/` beside the file (NAME, NAME.yml, NAME.yaml, NAME.json or a directory
NAME/ of such files). Variables merge in ansible-core's order (VariableManager with
the default VARIABLE_PRECEDENCE), each step replacing whole top-level keys:

1. inline vars of `all`
2. inline vars of the host's other groups, sorted by (depth, ansible_group_priority, name)
3. group_vars/all
4. group_vars of the host's other groups, same order
5. the host's inline vars (later mentions of the host override earlier ones)
6. host_vars/HOST

So a group_vars *file* beats an inline group var of a deeper group: that is Ansible's
real behaviour (checked against `ansible-inventory --list` in the tests).

On top of Ansible, xpufleet validates before any host is touched: YAML errors, wrong
structure, a typo of one of xpufleet's own variables (`nics` for `nic`), a value of
the wrong type, a bad port and two hosts with the same address are refused with the
file, line and key (InventoryError, exit 2). Other unknown names pass untouched.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
import string
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from .errors import InventoryError
from .host import Become, Host
from .patterns import select_hosts
from .sshargs import ADDRESS_VARS, ARGS_VARS, ArgsError, SSHArgs, check_address, parse_jump
from .sshargs import parse_ssh_args as _parse_ssh_args
from .variables import VARIABLES

#: extensions Ansible's host_group_vars plugin reads ("" = no extension)
VARS_EXTENSIONS = ("", ".yml", ".yaml", ".json")
GROUP_KEYS = ("vars", "children", "hosts")
DEFAULT_PORT = 22
DEFAULT_USER = "root"
#: connection settings and their aliases, in the order Ansible's ssh plugin reads
#: them: when several are set, the LAST one listed wins (as in ansible-core).
CONNECTION_VARS: dict[str, tuple[str, ...]] = {
    "address": ("ansible_host", "ansible_ssh_host"),
    "port": ("ansible_port", "ansible_ssh_port"),
    "user": ("ansible_user", "ansible_ssh_user"),
    "key_file": ("ansible_private_key_file", "ansible_ssh_private_key_file"),
}
_PORT_VARS = frozenset(CONNECTION_VARS["port"])
_STRING_CONNECTION_VARS = frozenset(
    CONNECTION_VARS["address"] + CONNECTION_VARS["user"] + CONNECTION_VARS["key_file"]
)
#: variables whose value is a path on the control node, relative to the inventory file
_CONTROL_PATH_VARS = ("known_hosts",)
_TYPO_CUTOFF = 0.8
#: secrets Ansible keeps in the inventory; xpufleet reads them from the environment
SECRET_VARS = frozenset(
    {
        "ansible_password",
        "ansible_ssh_pass",
        "ansible_ssh_password",
        "ansible_become_password",
        "ansible_become_pass",
        "ansible_sudo_pass",
        "ansible_sudo_password",
    }
)
BECOME_METHODS = ("sudo",)
_BOOL_WORDS = {
    "yes": True, "true": True, "on": True, "1": True,
    "no": False, "false": False, "off": False, "0": False,
}  # fmt: skip


@dataclass(frozen=True)
class Source:
    """Where a value was written: for error messages that point at the right line."""

    file: str
    line: int | None = None

    def error(self, message: str, key: object) -> InventoryError:
        """An InventoryError that names this file, line and `key`."""
        return InventoryError(message, file=self.file, line=self.line, key=str(key))


@dataclass
class Group:
    """A group as written: its direct hosts and children, and its own variables
    (inline vars overlaid by its group_vars files)."""

    name: str
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass
class Inventory:
    """A resolved inventory: hosts in inventory order with their merged variables."""

    path: Path
    hosts: dict[str, Host]
    groups: dict[str, Group]
    #: merged raw variables per host, exactly as `ansible-inventory --list` reports them
    hostvars: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    #: every host of each group, its descendants included, in inventory order
    members: dict[str, list[str]] = field(default_factory=dict, repr=False)
    #: things the inventory asks for that xpufleet does not do (printed, never fatal)
    warnings: list[str] = field(default_factory=list, repr=False)

    def select(self, limit: str | None) -> list[Host]:
        """Hosts an Ansible `--limit` pattern selects, in inventory order (exit 2 if none)."""
        names = select_hosts(limit, list(self.hosts), self.members)
        return [self.hosts[name] for name in names]

    def to_ansible_list(self, only: Collection[str] | None = None) -> dict[str, Any]:
        """The document `ansible-inventory -i FILE --list [--limit ...]` prints.

        `only` restricts it to those host names, as `--limit` does in Ansible.
        """
        shown = set(self.hosts if only is None else only)
        seen: set[str] = set()

        def describe(name: str) -> dict[str, Any]:
            group = self.groups[name]
            entry: dict[str, Any] = {}
            if name != "all":
                entry["hosts"] = [h for h in group.hosts if h in shown]
            entry["children"] = list(group.children)
            out: dict[str, Any] = {name: entry}
            for child in group.children:
                if child not in seen:
                    out.update(describe(child))
                    seen.add(child)
            for key in ("hosts", "children"):
                if key in entry and not entry[key]:
                    del entry[key]
            if not entry:
                del out[name]
            return out

        result = describe("all")
        result["_meta"] = {
            "hostvars": {
                name: _plain(v) for name, v in self.hostvars.items() if v and name in shown
            },
            "profile": "inventory_legacy",
        }
        return result


# --------------------------------------------------------------------------- YAML


class _Mapping(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers the line of itself and of each key."""

    line: int | None = None
    key_lines: dict[Any, int]


class _LineLoader(yaml.SafeLoader):
    """SafeLoader that keeps line numbers and refuses duplicate keys."""

    source = "<inventory>"
    text = ""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> _Mapping:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise InventoryError(
                        f"duplicate key (first at line {seen[key]})",
                        file=self.source,
                        line=line,
                        key=str(key),
                    )
            except TypeError:
                raise InventoryError(
                    "a mapping key must be a plain value", file=self.source, line=line
                ) from None
            seen[key] = line
        self.flatten_mapping(node)
        mapping = _Mapping()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            mapping[key] = self.construct_object(value_node, deep=True)
            mapping.key_lines[key] = key_node.start_mark.line + 1
        return mapping


def _construct_map(loader: _LineLoader, node: yaml.MappingNode) -> _Mapping:
    return loader.construct_mapping(node, deep=True)


def _construct_unsafe(loader: _LineLoader, node: yaml.Node) -> Any:
    """Ansible's `!unsafe` marks a string not to be templated; xpufleet never templates."""
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]


def _construct_vault(loader: _LineLoader, node: yaml.Node) -> Any:
    line = node.start_mark.line + 1
    raise InventoryError(
        "Ansible Vault values are not supported: put secrets in the control node's "
        "environment and name them in `secret_env`",
        file=loader.source,
        line=line,
        key=_key_near(loader.text, line),
    )


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_LineLoader.add_constructor("!unsafe", _construct_unsafe)
_LineLoader.add_constructor("!vault", _construct_vault)

_KEY_LINE = re.compile(r"^\s*(?:-\s+)?([^\s#:'\"][^:#]*?|'[^']*'|\"[^\"]*\")\s*:(?:\s|$)")


def _key_near(text: str, line: int) -> str | None:
    """The mapping key written at or just before `line`, to name it in a syntax error."""
    lines = text.splitlines()
    for candidate in reversed(lines[: max(0, min(line, len(lines)))]):
        match = _KEY_LINE.match(candidate)
        if match:
            return match.group(1).strip("'\"")
    return None


def load_yaml(path: Path, shown: str) -> Any:
    """Parse one YAML file with line numbers; any problem is an InventoryError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError("file not found", file=shown) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InventoryError(f"cannot read: {exc}", file=shown) from None
    loader = _LineLoader(text)
    loader.source = shown
    loader.text = text
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p) or str(exc)
        key = _key_near(text, line) if line else None
        raise InventoryError(
            f"YAML syntax error: {problem}", file=shown, line=line, key=key
        ) from None
    except yaml.YAMLError as exc:
        raise InventoryError(f"YAML error: {exc}", file=shown) from None
    finally:
        loader.dispose()


def _line(mapping: Any, key: Any) -> int | None:
    lines = getattr(mapping, "key_lines", None)
    if lines and key in lines:
        return lines[key]
    return getattr(mapping, "line", None)


def _plain(value: Any) -> Any:
    """Line-tracking containers -> plain dicts/lists, for Host.vars and JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------- validation

_TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
    bool: "true/false",
}


def _type_words(typ: type | tuple[type, ...]) -> str:
    types = typ if isinstance(typ, tuple) else (typ,)
    if set(types) == {int, float}:
        return "a number"
    return " or ".join(_TYPE_WORDS.get(t, t.__name__) for t in types)


def typo_of(name: str) -> str | None:
    """The xpufleet variable `name` looks like a misspelling of, if any."""
    if name in VARIABLES or name.startswith("ansible_"):
        return None
    candidates = [v for v in VARIABLES if v[:1] == name[:1]]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=_TYPO_CUTOFF)
    return close[0] if close else None


def check_variable(name: Any, value: Any, where: Source) -> None:
    """Refuse a typo of an xpufleet variable, a wrong type or choice, a bad connection value."""

    def refuse(message: str) -> InventoryError:
        return where.error(message, name)

    if not isinstance(name, str):
        raise refuse("variable names must be strings")
    spec = VARIABLES.get(name)
    if spec is not None:
        if value is None:
            if spec.default is None:
                return
            raise refuse(f"needs a value: {_type_words(spec.type)} (default {spec.default!r})")
        if isinstance(value, str) and "{{" in value:
            return  # Jinja2: typed and checked once rendered (variables.resolve)
        types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):
            hint = ""
            if str in types and isinstance(value, (int, float)) and not isinstance(value, bool):
                hint = f" (quote it: '{value}')"
            raise refuse(
                f"expected {_type_words(spec.type)}, got {type(value).__name__} {value!r}{hint}"
            )
        if spec.choices and value not in spec.choices:
            allowed = ", ".join(str(c) for c in spec.choices)
            raise refuse(f"{value!r} is not one of: {allowed}")
        if name in ADDRESS_VARS:
            problem = check_address(value)
            if problem:
                raise refuse(problem)
        return
    if name in SECRET_VARS:
        raise refuse(
            "passwords do not belong in the inventory: SSH logs in with keys "
            "(ansible_ssh_private_key_file); a sudo password comes from the environment "
            "variable XPUFLEET_BECOME_PASSWORD or the --ask-become-pass prompt"
        )
    if name in _PORT_VARS:
        _port_of(value, refuse)
        return
    if name in ARGS_VARS:
        try:
            _parse_ssh_args(value)
        except ArgsError as exc:
            raise refuse(str(exc)) from None
        return
    if name == "ansible_become":
        as_bool(value, refuse)
        return
    if name == "ansible_become_user":
        if not isinstance(value, str) or check_address(value) is not None:
            raise refuse(f"expected a user name, got {value!r}")
        return
    if name == "ansible_become_method":
        if value not in BECOME_METHODS:
            raise refuse(
                f"become method {value!r} is not supported: xpufleet becomes root with sudo only"
            )
        return
    if name in ADDRESS_VARS:
        problem = check_address(value)
        if problem:
            raise refuse(problem)
        return
    if name in _STRING_CONNECTION_VARS:
        if not isinstance(value, str) or not value.strip():
            raise refuse(f"expected a non-empty string, got {value!r}")
        return
    typo = typo_of(name)
    if typo:
        raise refuse(
            f"unknown xpufleet variable; did you mean '{typo}'? "
            "(see inventory/README.md for the variables xpufleet reads)"
        )


def as_bool(value: Any, refuse: Any) -> bool:
    """Ansible's booleans: true/false, yes/no, on/off, 1/0."""
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in _BOOL_WORDS:
        raise refuse(f"expected true or false, got {value!r}")
    return _BOOL_WORDS[word]


def _port_of(value: Any, refuse: Any) -> int:
    if isinstance(value, bool):
        raise refuse(f"not a port number: {value!r}")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int) or not 1 <= value <= 65535:
        raise refuse(f"not a port number (1-65535): {value!r}")
    return value


# ------------------------------------------------------------------ host patterns


def _split_port(pattern: str) -> tuple[str, str | None]:
    """`name:port`, `[v6]:port` -> (name, port); anything else is a bare name."""
    match = re.match(r"^\[([^\]]+)\]:(\d+)$", pattern)
    if match and ":" in match.group(1):
        return match.group(1), match.group(2)
    outside = re.sub(r"\[[^\]]*\]", "", pattern)
    if outside.count(":") == 1:
        name, _, port = pattern.rpartition(":")
        if port.isdigit() and name:
            return name, port
    return pattern, None


def expand_host_range(pattern: str) -> list[str]:
    """Ansible's host ranges: `node[1:4]`, `node[01:08:2]`, `rack-[a:c]`."""
    if "[" not in pattern:
        return [pattern]
    head, _, rest = pattern.partition("[")
    inner, closed, tail = rest.partition("]")
    bounds = inner.split(":")
    if not closed or len(bounds) not in (2, 3):
        raise ValueError("a host range is [begin:end] or [begin:end:step]")
    begin, end = bounds[0] or "0", bounds[1]
    step = int(bounds[2]) if len(bounds) == 3 and bounds[2] else 1
    if not end:
        raise ValueError("a host range needs an end value")
    width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
    if width and len(end) != width:
        raise ValueError("zero-padded range ends must have the same width")
    if begin in string.ascii_letters and end in string.ascii_letters:
        first, last = string.ascii_letters.index(begin), string.ascii_letters.index(end)
        if first > last:
            raise ValueError("a host range needs begin <= end")
        items = list(string.ascii_letters[first : last + 1 : step])
    else:
        items = [str(i).zfill(width) for i in range(int(begin), int(end) + 1, step)]
    names: list[str] = []
    for item in items:
        names.extend(expand_host_range(f"{head}{item}{tail}"))
    return names


# ------------------------------------------------------------------------- parsing


@dataclass
class _GroupState:
    name: str
    source: Source
    hosts: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    var_sources: dict[str, Source] = field(default_factory=dict)
    priority: int = 1


@dataclass
class _HostState:
    name: str
    source: Source
    groups: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    var_sources: dict[str, Source] = field(default_factory=dict)


@dataclass
class _Layer:
    """One step of the precedence ladder: variables plus where each was written."""

    vars: dict[str, Any]
    sources: dict[str, Source]


class _Builder:
    """Mirrors ansible-core's YAML inventory plugin and InventoryData, step for step."""

    def __init__(self, shown: str) -> None:
        self.shown = shown
        origin = Source(shown, 1)
        self.groups: dict[str, _GroupState] = {
            "all": _GroupState("all", origin),
            "ungrouped": _GroupState("ungrouped", origin),
        }
        self._add_child("all", "ungrouped", origin)
        self.hosts: dict[str, _HostState] = {}

    # -- structure --------------------------------------------------------
    def parse(self, data: Any) -> None:
        if data is None:
            raise InventoryError("the inventory is empty", file=self.shown, line=1)
        if not isinstance(data, dict):
            raise InventoryError(
                f"an inventory is a mapping of groups (all: ...), got {type(data).__name__}",
                file=self.shown,
                line=1,
            )
        for name, body in data.items():
            self._parse_group(name, body, Source(self.shown, _line(data, name)))
        self._reconcile()

    def _parse_group(self, name: Any, body: Any, where: Source) -> str:
        if not isinstance(name, str) or not name:
            raise where.error("a group name must be a non-empty string", name)
        if body is not None and not isinstance(body, dict):
            raise where.error(
                f"group '{name}' must be a mapping with hosts/children/vars, "
                f"got {type(body).__name__}",
                name,
            )
        self.groups.setdefault(name, _GroupState(name, where))
        for section, content in (body or {}).items():
            at = Source(self.shown, _line(body, section))
            if section not in GROUP_KEYS:
                close = difflib.get_close_matches(str(section), GROUP_KEYS, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                raise at.error(
                    f"unexpected key in group '{name}': only hosts, children and vars{hint}",
                    section,
                )
            if isinstance(content, str):  # Ansible accepts `hosts: node1`
                content = {content: None}
            if content is None:
                continue
            if not isinstance(content, dict):
                raise at.error(
                    f"'{section}' of group '{name}' must be a mapping (name: ...), "
                    f"got {type(content).__name__}",
                    section,
                )
            if section == "vars":
                for var, value in content.items():
                    self._set_group_var(name, var, value, Source(self.shown, _line(content, var)))
            elif section == "children":
                for child, child_body in content.items():
                    child_at = Source(self.shown, _line(content, child))
                    child_name = self._parse_group(child, child_body, child_at)
                    self._add_child(name, child_name, child_at)
            else:
                for pattern, host_vars in content.items():
                    self._parse_hosts(
                        name, pattern, host_vars, Source(self.shown, _line(content, pattern))
                    )
        return name

    def _parse_hosts(self, group: str, pattern: Any, host_vars: Any, where: Source) -> None:
        if not isinstance(pattern, str) or not pattern.strip():
            raise where.error("a host name must be a string (quote numbers and addresses)", pattern)
        if host_vars is not None and not isinstance(host_vars, dict):
            raise where.error(
                f"host '{pattern}' must map to its variables (name: value) or nothing, "
                f"got {type(host_vars).__name__} {host_vars!r}",
                pattern,
            )
        name_pattern, port = _split_port(pattern)
        try:
            names = expand_host_range(name_pattern)
        except ValueError as exc:
            raise where.error(f"bad host range: {exc}", pattern) from None
        for name in names:
            host = self.hosts.get(name)
            if host is None:
                host = self.hosts[name] = _HostState(name, where)
                if port is not None:
                    self._set_host_var(name, "ansible_port", int(port), where)
            if group not in host.groups:
                host.groups.append(group)
                self.groups[group].hosts.append(name)
            for var, value in (host_vars or {}).items():
                self._set_host_var(name, var, value, Source(self.shown, _line(host_vars, var)))

    def _set_group_var(self, group: str, var: Any, value: Any, where: Source) -> None:
        state = self.groups[group]
        if var == "ansible_group_priority":
            try:
                state.priority = int(value)
            except (TypeError, ValueError):
                raise where.error(f"expected an integer, got {value!r}", var) from None
            return
        check_variable(var, value, where)
        state.vars[var] = _plain(value)
        state.var_sources[var] = where

    def _set_host_var(self, host: str, var: Any, value: Any, where: Source) -> None:
        check_variable(var, value, where)
        state = self.hosts[host]
        state.vars[var] = _plain(value)
        state.var_sources[var] = where

    def _add_child(self, parent: str, child: str, where: Source) -> None:
        if child == "all":
            raise where.error("'all' cannot be a child group", child)
        if child == parent or parent in self.descendants(child):
            raise where.error(
                f"group '{child}' would contain itself (loop through '{parent}')", child
            )
        if child not in self.groups[parent].children:
            self.groups[parent].children.append(child)
            self.groups[child].parents.append(parent)

    def descendants(self, name: str) -> list[str]:
        """Descendants of a group, parents before children (no duplicates)."""
        found: dict[str, None] = {}
        todo = list(self.groups[name].children)
        while todo:
            current = todo.pop(0)
            if current not in found:
                found[current] = None
                todo.extend(self.groups[current].children)
        return list(found)

    def hosts_below(self, name: str) -> set[str]:
        """Hosts of a group and of all its descendants."""
        inside = set(self.groups[name].hosts)
        for descendant in self.descendants(name):
            inside.update(self.groups[descendant].hosts)
        return inside

    def _reconcile(self) -> None:
        """Ansible's reconcile_inventory: orphan groups go under all, lone hosts to ungrouped."""
        for name, group in list(self.groups.items()):
            if name != "all" and not group.parents:
                self._add_child("all", name, group.source)
        ungrouped = self.groups["ungrouped"]
        for name, host in self.hosts.items():
            others = set(host.groups) - {"all", "ungrouped"}
            if "ungrouped" in host.groups and others:
                host.groups.remove("ungrouped")
                ungrouped.hosts.remove(name)
            elif not others and "ungrouped" not in host.groups:
                host.groups.append("ungrouped")
                ungrouped.hosts.append(name)

    # -- resolution -------------------------------------------------------
    def depths(self) -> dict[str, int]:
        """Longest path from `all`: Ansible's group depth."""
        memo: dict[str, int] = {"all": 0}

        def depth(name: str) -> int:
            if name not in memo:
                parents = self.groups[name].parents
                memo[name] = max((depth(p) + 1 for p in parents), default=0)
            return memo[name]

        for name in self.groups:
            depth(name)
        return memo

    def ancestors(self, name: str) -> set[str]:
        found: set[str] = set()
        todo = list(self.groups[name].parents)
        while todo:
            current = todo.pop()
            if current not in found:
                found.add(current)
                todo.extend(self.groups[current].parents)
        return found


def _vars_files(directory: Path, name: str) -> list[Path]:
    """Files Ansible's host_group_vars plugin reads for one group or host, in order."""
    if name.startswith(os.sep) or not directory.is_dir():
        return []
    base = directory / name
    for ext in VARS_EXTENSIONS:
        candidate = Path(f"{base}{ext}")
        if candidate.is_dir():
            return _dir_vars_files(candidate)
        if candidate.exists():
            return [candidate]
    return []


def _dir_vars_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(os.listdir(directory)):
        if entry.startswith(".") or entry.endswith("~"):
            continue
        path = directory / entry
        ext = os.path.splitext(entry)[1]
        if path.is_dir() and not ext:
            found.extend(_dir_vars_files(path))
        elif path.is_file() and (not ext or ext in VARS_EXTENSIONS):
            found.append(path)
    return found


def _load_vars_layer(name: str, files: list[Path], realbase: Path, shown_base: Path) -> _Layer:
    """One group's or host's vars files merged in order, each value with its file and line."""
    layer = _Layer({}, {})
    for path in files:
        shown = str(shown_base / path.relative_to(realbase))
        data = load_yaml(path, shown)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise InventoryError(
                f"the vars of '{name}' must be a mapping of variables, got {type(data).__name__}",
                file=shown,
                line=1,
                key=name,
            )
        for var, value in data.items():
            where = Source(shown, _line(data, var))
            check_variable(var, value, where)
            layer.vars[var] = _plain(value)
            layer.sources[var] = where
    return layer


def _resolve_path(value: str, base: Path) -> str:
    return os.path.abspath(base / Path(value).expanduser())


def _connection(merged: dict[str, Any], setting: str) -> tuple[Any, str | None]:
    """(value, variable name) of a connection setting; the last alias set wins."""
    found: tuple[Any, str | None] = (None, None)
    for var in CONNECTION_VARS[setting]:
        if var in merged and merged[var] is not None:
            found = (merged[var], var)
    return found


def _merge(layers: list[_Layer]) -> tuple[dict[str, Any], dict[str, Source]]:
    """Later layers replace whole top-level keys (Ansible's default hash_behaviour)."""
    merged: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    for layer in layers:
        merged.update(layer.vars)
        sources.update(layer.sources)
    return copy.deepcopy(merged), sources  # hosts never share a mutable value


def ssh_args_of(merged: dict[str, Any]) -> SSHArgs:
    """common args, then extra args: as ssh sees them, the first value of an option wins."""
    args = SSHArgs()
    for var in ARGS_VARS:
        args.fill_from(_parse_ssh_args(merged.get(var)))
    return args


def _make_host(
    name: str, merged: dict[str, Any], member_of: set[str], base: Path
) -> tuple[Host, str | None]:
    """The Host (connection resolved, control-side paths absolute) and the var naming its
    address (None when the address defaults to the host's name).

    Precedence, as Ansible builds the ssh command line: ansible_user/port/key vars, then
    the -o options of ansible_ssh_common_args, then of ansible_ssh_extra_args; what none
    of them sets stays in `Host.unset` for ssh_config to fill.
    """
    address, address_var = _connection(merged, "address")
    port, _ = _connection(merged, "port")
    user, _ = _connection(merged, "user")
    key_file, _ = _connection(merged, "key_file")
    args = ssh_args_of(merged)
    port = port if port is not None else args.port
    user = user if user is not None else args.user
    key_file = key_file if key_file is not None else args.identity_file
    resolved = dict(merged)
    if resolved.get("known_hosts") is None and args.known_hosts:
        resolved["known_hosts"] = args.known_hosts
    for var in _CONTROL_PATH_VARS:
        if isinstance(resolved.get(var), str):
            resolved[var] = _resolve_path(resolved[var], base)
    if args.config_file is not None:
        none = args.config_file.lower() in ("none", "/dev/null")
        resolved["ssh_config_file"] = "none" if none else _resolve_path(args.config_file, base)
    settings = {
        "user": user,
        "port": port,
        "key_file": key_file,
        "known_hosts": resolved.get("known_hosts"),
        "jump": args.proxy_jump,
        "connect_timeout": args.connect_timeout,
    }
    become = None
    if as_bool(merged.get("ansible_become", False), ValueError):
        become = Become(
            user=str(merged.get("ansible_become_user") or "root"),
            method=str(merged.get("ansible_become_method") or "sudo"),
        )
    host = Host(
        name=name,
        address=str(address) if address is not None else name,
        port=DEFAULT_PORT if port is None else int(port),
        user=str(user) if user is not None else DEFAULT_USER,
        key_file=_resolve_path(str(key_file), base) if key_file is not None else None,
        groups=tuple(sorted(member_of)),
        vars=resolved,
        jump=parse_jump(args.proxy_jump) if args.proxy_jump else (),
        connect_timeout=args.connect_timeout,
        unset=frozenset(k for k, v in settings.items() if v is None),
        become=become,
    )
    return host, address_var


def _args_warnings(merged: dict[str, Any], sources: dict[str, Source]) -> list[str]:
    """One line per ssh option xpufleet does not act on, naming where it was written."""
    found = []
    for var in ARGS_VARS:
        unsupported = _parse_ssh_args(merged.get(var)).unsupported
        if unsupported:
            where = sources.get(var)
            place = f"{where.file}:{where.line}: " if where and where.line else ""
            found.append(f"{place}key '{var}': xpufleet does not use {', '.join(unsupported)}")
    return found


def load_inventory(path: str | Path) -> Inventory:
    """Read, resolve and validate an inventory; raises InventoryError (exit 2)."""
    shown = str(path)
    inventory_path = Path(path).expanduser()
    if inventory_path.is_dir():
        raise InventoryError(
            "is a directory; give the inventory file (group_vars/ and host_vars/ "
            "beside it are read automatically)",
            file=shown,
            key="hosts",
        )
    if not inventory_path.exists():
        raise InventoryError("inventory file not found", file=shown, key="hosts")
    builder = _Builder(shown)
    data = load_yaml(inventory_path, shown)
    if isinstance(data, dict) and "plugin" in data:  # Ansible's inventory-plugin files
        from .inventory_slurm import expand_plugin

        data = expand_plugin(data, inventory_path, shown)
    builder.parse(data)

    base = inventory_path.parent
    shown_base = Path(shown).parent
    realbase = Path(os.path.realpath(base))  # Ansible looks beside the real file

    def vars_files_layer(kind: str, name: str) -> _Layer:
        files = _vars_files(realbase / kind, name)
        return _load_vars_layer(name, files, realbase, shown_base)

    group_files = {name: vars_files_layer("group_vars", name) for name in builder.groups}
    groups = {
        name: Group(
            name,
            list(state.hosts),
            list(state.children),
            {**state.vars, **group_files[name].vars},
        )
        for name, state in builder.groups.items()
    }
    depths = builder.depths()
    all_state = builder.groups["all"]

    hosts: dict[str, Host] = {}
    hostvars: dict[str, dict[str, Any]] = {}
    warnings: dict[str, None] = {}
    by_address: dict[tuple[str, int, tuple[Any, ...]], str] = {}
    for name, state in builder.hosts.items():
        member_of = set(state.groups).union(*(builder.ancestors(g) for g in state.groups))
        member_of.discard("all")
        ordered = sorted(member_of, key=lambda g: (depths[g], builder.groups[g].priority, g))
        layers = [_Layer(all_state.vars, all_state.var_sources)]
        layers += [_Layer(builder.groups[g].vars, builder.groups[g].var_sources) for g in ordered]
        layers.append(group_files["all"])
        layers += [group_files[g] for g in ordered]
        layers.append(_Layer(state.vars, state.var_sources))
        layers.append(vars_files_layer("host_vars", name))
        merged, sources = _merge(layers)
        host, address_var = _make_host(name, merged, member_of, base)
        host = replace(host, var_sources={k: (v.file, v.line) for k, v in sources.items()})
        if host.become and merged.get("connector") == "slurm":
            raise sources["ansible_become"].error(
                "ansible_become needs the ssh connector (srun steps run as the allocation's "
                "user; sudo is not applied there)",
                "ansible_become",
            )
        warnings.update(dict.fromkeys(_args_warnings(merged, sources)))
        # the same private address behind two different jump hosts is two machines
        other = by_address.setdefault((host.address, host.port, host.jump), name)
        if other != name:
            where = sources.get(address_var or "", state.source)
            raise where.error(
                f"host '{name}' has the same address {host.address}:{host.port} as host "
                f"'{other}'; each host needs its own address or port",
                address_var or name,
            )
        hosts[name] = host
        hostvars[name] = merged

    members: dict[str, list[str]] = {}
    for group in builder.groups:
        inside = set(hosts) if group == "all" else builder.hosts_below(group)
        members[group] = [h for h in hosts if h in inside]
    return Inventory(
        path=inventory_path.resolve(),
        hosts=hosts,
        groups=groups,
        hostvars=hostvars,
        members=members,
        warnings=list(warnings),
    )


# -------------------------------------------------------------------- documentation

README = Path(__file__).resolve().parent.parent / "inventory" / "README.md"
TABLE_BEGIN = "<!-- BEGIN xpufleet variables: generated from xpufleet/variables.py -->"
TABLE_END = "<!-- END xpufleet variables -->"


def variables_markdown() -> str:
    """The README's table of xpufleet's variables, straight from the registry."""
    lines = [
        "| variable | type | default | choices | meaning |",
        "|---|---|---|---|---|",
    ]
    for spec in VARIABLES.values():
        default = "(unset)" if spec.default is None else f"`{json.dumps(spec.default)}`"
        choices = ", ".join(f"`{c}`" for c in spec.choices) or ""
        meaning = spec.doc.replace("|", "\\|")
        kind = re.sub(r"^an? ", "", _type_words(spec.type))
        lines.append(f"| `{spec.name}` | {kind} | {default} | {choices} | {meaning} |")
    return "\n".join(lines)


def readme_with_table(text: str) -> str:
    """README text with the generated table put between its markers."""
    head, begin, rest = text.partition(TABLE_BEGIN)
    _, end, tail = rest.partition(TABLE_END)
    if not begin or not end:
        raise ValueError(f"{README}: table markers not found")
    return f"{head}{TABLE_BEGIN}\n{variables_markdown()}\n{TABLE_END}{tail}"


if __name__ == "__main__":  # python -m xpufleet.inventory: refresh inventory/README.md
    README.write_text(readme_with_table(README.read_text(encoding="utf-8")), encoding="utf-8")
