"""Quoting for remote shells: every value that reaches a remote shell goes through here."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def quote(value: object) -> str:
    """Quote one value for POSIX sh, whatever it contains."""
    return shlex.quote(str(value))


def join(argv: Iterable[object]) -> str:
    """A command line from arguments, each quoted."""
    return " ".join(quote(a) for a in argv)


def env_assignments(env: Mapping[str, object]) -> str:
    """`export K='v' ...;` for a remote shell; refuses names that are not identifiers."""
    if not env:
        return ""
    parts = []
    for name, value in env.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        parts.append(f"{name}={quote(value)}")
    return "export " + " ".join(parts) + "; "
