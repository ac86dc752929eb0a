"""pip requirement strings: parsed (bad input names the key) and checked against what a
node has installed; shared by provision's package step and doctor's python-stack check."""

from __future__ import annotations

from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from .errors import InputError


def parse_requirement(text: str, *, where: str = "pip_packages") -> Requirement:
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise InputError(f"not a pip requirement: {text!r} ({exc})", key=where) from exc


def unsatisfied(requirements: list[str], installed: dict[str, str | None]) -> list[str]:
    """The requirements the installed versions do not meet (pure; order kept)."""
    missing: list[str] = []
    for text in requirements:
        req = parse_requirement(text)
        version = installed.get(req.name)
        if version is None:
            missing.append(text)
            continue
        try:
            ok = req.specifier.contains(Version(version), prereleases=True)
        except InvalidVersion:
            ok = False
        if not ok:
            missing.append(text)
    return missing
