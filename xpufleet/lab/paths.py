"""Paths declared in one line on the lab's objects (Lab, SlurmLayout, the lab's envs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class Under:
    """A path below another path attribute of its object, declared in one line:
    `key_file = Under("dir", "id_ed25519")` is `self.dir / "id_ed25519"`."""

    def __init__(self, base: str, *parts: str) -> None:
        self.base = base
        self.parts = parts

    def __get__(self, obj: Any, owner: type | None = None) -> Path:
        if obj is None:
            return self  # type: ignore[return-value]
        return Path(getattr(obj, self.base)).joinpath(*self.parts)
