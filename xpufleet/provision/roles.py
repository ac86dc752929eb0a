"""Roles: `xpufleet/roles/<name>/` (package data) = defaults.yaml + templates/ (Jinja2) + steps.py.

A role's steps are a small Python module (`steps(role) -> list[Step]`) rather than
YAML: roles need conditionals (venv or conda), loops (one step per wheel of the
manifest, per secret) and computed paths; in YAML that would mean inventing a
`when:`/`loop:` mini-language. Data stays declarative where it is data
(defaults.yaml, templates).

Variables: a role reads the host's resolved variables (`Host.var.values`,
variables.resolve): registry defaults < every shipped role's defaults.yaml < the
inventory, Jinja2 in strings rendered, registered ones typed.

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

from ..errors import InputError
from ..host import Host
from ..variables import ROLES_DIR
from .manifest import Manifest
from .steps import Directory, File, Step

#: provision applies these roles, in this order
ROLE_ORDER = ("oneapi", "python_env", "wheels", "sglang")


@dataclass
class Role:
    name: str
    path: Path
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
    return Role(name, path, build_steps, env)


def _shquote(value: Any) -> str:
    from ..shell import quote

    return quote(value)


def load_roles(names: Iterable[str] = ROLE_ORDER, roles_dir: Path = ROLES_DIR) -> list[Role]:
    return [load_role(n, roles_dir) for n in names]


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
    steps: list[Step] = []
    for role in roles:
        ctx = RoleContext(role, host, dict(host.var.values), manifest, dict(secrets or {}))
        steps.extend(role.build_steps(ctx))
    ids = [s.id for s in steps]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InputError(f"duplicate step ids: {', '.join(dupes)}", key="roles")
    return steps
