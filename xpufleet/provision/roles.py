"""Roles: `xpufleet/roles/<name>/` (package data) = defaults.yaml + templates/ (Jinja2) + steps.py.

A role's steps are a small Python module (`steps(role) -> list[Step]`) rather than
YAML: roles need conditionals (venv or conda), loops (one step per wheel of the
manifest, per secret) and computed paths; in YAML that would mean inventing a
`when:`/`loop:` mini-language. Data stays declarative where it is data
(defaults.yaml, templates).

Variables, lowest precedence first (Ansible's order for role defaults):
xpufleet's registry defaults (variables.py) < the role's defaults.yaml < the
inventory (all < parent group < child group < host). String values may use Jinja2
(`"{{ install_dir }}/env"`), rendered against the merged variables.

Everything here runs on the control node before any host is touched: a template
error or a missing secret is bad input (exit 2) naming the file and line.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import jinja2
import yaml

from ..errors import InputError
from ..host import Host
from ..variables import VARIABLES
from .manifest import Manifest
from .steps import Directory, File, Step

ROLES_DIR = Path(__file__).resolve().parent.parent / "roles"
#: provision applies these roles, in this order
ROLE_ORDER = ("oneapi", "python_env", "wheels", "sglang")


@dataclass
class Role:
    name: str
    path: Path
    defaults: dict[str, Any]
    build_steps: Callable[[RoleContext], list[Step]]
    env: jinja2.Environment


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"xpufleet_role_{name}", path)
    if spec is None or spec.loader is None:
        raise InputError("cannot load the role's steps", file=str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_role(name: str, roles_dir: Path = ROLES_DIR) -> Role:
    path = roles_dir / name
    if not path.is_dir():
        raise InputError(f"no role '{name}' in {roles_dir}", key="roles")
    defaults_file = path / "defaults.yaml"
    defaults: dict[str, Any] = {}
    if defaults_file.exists():
        try:
            loaded = yaml.safe_load(defaults_file.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise InputError(
                f"YAML error: {exc}",
                file=str(defaults_file),
                line=mark.line + 1 if mark else None,
            ) from exc
        if not isinstance(loaded, dict):
            raise InputError("defaults must be a mapping", file=str(defaults_file))
        defaults = loaded
    steps_file = path / "steps.py"
    build_steps: Callable[[RoleContext], list[Step]] = lambda _ctx: []  # noqa: E731
    if steps_file.exists():
        build_steps = _load_module(name, steps_file).steps
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(path / "templates")),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["shquote"] = _shquote
    return Role(name, path, defaults, build_steps, env)


def _shquote(value: Any) -> str:
    from ..shell import quote

    return quote(value)


def load_roles(names: Iterable[str] = ROLE_ORDER, roles_dir: Path = ROLES_DIR) -> list[Role]:
    return [load_role(n, roles_dir) for n in names]


# -- variables -----------------------------------------------------------------------


def render_value(value: Any, context: dict[str, Any], where: str, file: str | None = None) -> Any:
    """Jinja2 in a variable's strings (lists, dicts) rendered; an error is bad input."""
    if isinstance(value, str) and "{{" in value:
        try:
            return (
                jinja2.Environment(undefined=jinja2.StrictUndefined)
                .from_string(value)
                .render(context)
            )
        except jinja2.TemplateError as exc:
            raise InputError(f"cannot render {value!r}: {exc}", file=file, key=where) from exc
    if isinstance(value, list):
        return [render_value(v, context, where, file) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, context, where, file) for k, v in value.items()}
    return value


def merged_vars(host: Host, roles: Iterable[Role] = ()) -> dict[str, Any]:
    """Registry defaults < role defaults < inventory, with Jinja2 in strings rendered."""
    merged: dict[str, Any] = {name: spec.default for name, spec in VARIABLES.items()}
    for role in roles:
        merged.update(role.defaults)
    merged.update(host.vars)
    merged["inventory_hostname"] = host.name
    merged["ansible_host"] = host.address
    for _round in range(4):  # values may refer to values that refer to values
        rendered = {k: render_value(v, merged, k) for k, v in merged.items()}
        if rendered == merged:
            break
        merged = rendered
    return merged


# -- what a role's steps module sees -------------------------------------------------


@dataclass
class RoleContext:
    """One role on one host: its variables, templates, and helpers to make steps."""

    role: Role
    host: Host
    vars: dict[str, Any]
    manifest: Manifest
    secrets: dict[str, str] = field(default_factory=dict)

    def id(self, name: str) -> str:
        return f"provision.{self.role.name}.{name}"

    def tags(self, *extra: str) -> frozenset[str]:
        return frozenset((self.role.name, *extra))

    def render(self, template: str, **extra: Any) -> str:
        try:
            tpl = self.role.env.get_template(template)
            return tpl.render({**self.vars, **extra})
        except jinja2.TemplateSyntaxError as exc:
            raise InputError(
                f"template error: {exc.message}", file=exc.filename or template, line=exc.lineno
            ) from exc
        except jinja2.TemplateNotFound as exc:
            raise InputError(
                "template not found", file=str(self.role.path / "templates" / template)
            ) from exc
        except jinja2.UndefinedError as exc:
            raise InputError(
                f"template error: {exc.message} (host {self.host.name})",
                file=str(self.role.path / "templates" / template),
            ) from exc

    def directory(self, name: str, path: str, mode: int = 0o755, *tags: str) -> Directory:
        return Directory(self.id(name), self.tags(*tags), path=path, mode=mode)

    def template(
        self,
        name: str,
        template: str,
        dest: str,
        *,
        mode: int = 0o644,
        secret: bool = False,
        **extra: Any,
    ) -> File:
        content = self.render(template, **extra).encode()
        return File(
            self.id(name),
            self.tags("templates"),
            path=dest,
            content=content,
            mode=0o600 if secret else mode,
            secret=secret,
            source=f"xpufleet/roles/{self.role.name}/templates/{template}",
        )


def read_secrets(names: Iterable[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """Values of the control node's env vars named by `secret_env`; a missing one is bad input."""
    environ = dict(os.environ if environ is None else environ)
    names = list(names)
    missing = [n for n in names if not environ.get(n)]
    if missing:
        raise InputError(
            f"secret_env names {', '.join(missing)}, not set in the control node's environment "
            "(export it before provisioning; values are never put in argv, logs or JSON)",
            key="secret_env",
        )
    return {n: environ[n] for n in names}


# -- selection -----------------------------------------------------------------------


def known_tags(steps: Iterable[Step]) -> set[str]:
    return {tag for step in steps for tag in step.tags}


def parse_tags(text: str | None) -> set[str]:
    return {t.strip() for t in (text or "").split(",") if t.strip()}


def select_steps(steps: list[Step], tags: set[str], skip_tags: set[str]) -> list[Step]:
    """--tags keeps steps carrying any of them; --skip-tags drops steps carrying any."""
    chosen = [s for s in steps if not tags or (s.tags & tags)]
    return [s for s in chosen if not (s.tags & skip_tags)]


def plan_host(
    host: Host,
    roles: list[Role],
    manifest: Manifest,
    *,
    secrets: dict[str, str] | None = None,
) -> list[Step]:
    """Every step of every role for one host, in order (pure: no SSH)."""
    merged = merged_vars(host, roles)
    steps: list[Step] = []
    for role in roles:
        ctx = RoleContext(role, host, merged, manifest, dict(secrets or {}))
        steps.extend(role.build_steps(ctx))
    ids = [s.id for s in steps]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate step ids: {', '.join(dupes)}", key="roles")
    return steps
