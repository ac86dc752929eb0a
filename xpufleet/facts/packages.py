"""Installed-package facts from `dpkg -s`/`dpkg -l` and `rpm -q` output (fixtures 12b, 12c)."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: the GPU runtime packages doctor asks the package manager about
RUNTIME_PACKAGES = (
    "level-zero",
    "intel-level-zero-gpu",
    "intel-opencl-icd",
    "libze1",
    "libze-intel-gpu1",
    "intel-ocloc",
)


@dataclass(frozen=True)
class Package:
    name: str
    version: str | None
    installed: bool


_DPKG_L = re.compile(r"^(?P<want>[a-z])(?P<state>[a-z])\s+(?P<name>\S+)\s+(?P<version>\S+)\s")
_RPM_QF = re.compile(r"^(?P<name>[A-Za-z0-9._+-]+) (?P<version>\S+)$")
_RPM_NVR = re.compile(
    r"^(?P<name>.+?)-(?P<version>\d[^-]*-[^-]+?)(?:\.(?:x86_64|noarch|aarch64))?$"
)


def parse_dpkg(text: str) -> dict[str, Package]:
    """Stanzas of `dpkg -s` (Package:/Status:/Version:) and rows of `dpkg -l`."""
    found: dict[str, Package] = {}
    name: str | None = None
    fields: dict[str, str] = {}

    def flush() -> None:
        if name:
            installed = "install ok installed" in fields.get("status", "")
            bare = name.split(":")[0]
            found[bare] = Package(bare, fields.get("version"), installed)

    for line in text.splitlines():
        row = _DPKG_L.match(line)
        if row and not line.startswith(("Package:", "Status:")):
            pkg = row.group("name").split(":")[0]
            found[pkg] = Package(pkg, row.group("version"), row.group("state") == "i")
            continue
        if line.startswith("Package:"):
            flush()
            name, fields = line.split(":", 1)[1].strip(), {}
            continue
        if name and ":" in line and not line.startswith((" ", "\t")):
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
    flush()
    return found


def parse_rpm(text: str) -> dict[str, Package]:
    """`rpm -q --qf '%{NAME} %{VERSION}-%{RELEASE}\\n' ...` lines (or plain NVRs)."""
    found: dict[str, Package] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or "not installed" in line:
            continue
        match = _RPM_QF.match(line) or _RPM_NVR.match(line)
        if match:
            found[match.group("name")] = Package(match.group("name"), match.group("version"), True)
    return found
