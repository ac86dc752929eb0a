"""A resolved inventory host: connection facts plus its merged variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Host:
    """One node as the inventory resolves it (Ansible precedence already applied)."""

    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    groups: tuple[str, ...] = ()
    vars: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
