"""Kernel and fabric facts oneCCL depends on: kernel release, Yama's ptrace_scope, the
user the ranks run as, and the libfabric providers (`fi_info -l`).

Why: `ccl_ze_ipc_exchange: pidfd` (oneCCL's default) hands GPU memory handles between the
ranks of a node with pidfd_open/pidfd_getfd, which need Linux >= 5.6 and, for a non-root
user, a permissive `kernel.yama.ptrace_scope` (oneCCL `src/common/utils/ze_fd_manager.cpp`
throws and names it). `fi_provider: tcp` works on any node but is slow where the fabric
offers `cxi` (Slingshot), `verbs` (InfiniBand/RoCE), `psm3`, `opx` or `efa`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .registry import Fact

#: libfabric providers that drive a fast NIC directly (tcp/udp/sockets/shm do not)
FAST_PROVIDERS = ("cxi", "verbs", "psm3", "psm2", "opx", "efa")


@dataclass(frozen=True)
class Kernel:
    release: str | None
    #: /proc/sys/kernel/yama/ptrace_scope (None: Yama absent, classic ptrace rules)
    ptrace_scope: int | None
    #: effective uid the probe (and the ranks) run as
    uid: int | None

    @property
    def version(self) -> tuple[int, int] | None:
        """(major, minor) of the release, e.g. '5.15.0-91-generic' -> (5, 15)."""
        match = re.match(r"^(\d+)\.(\d+)", self.release or "")
        return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True)
class Fabric:
    #: path of fi_info (None: not found on the node)
    tool: str | None
    providers: tuple[str, ...]
    error: str | None = None


def parse_fi_info_list(text: str) -> list[str]:
    """Provider names of `fi_info -l` (fixtures 15a/15b): 'verbs:' lines, each followed
    by an indented 'version: N' line. Utility and hook providers (ofi_*) are left out:
    they layer over a core provider and never carry traffic themselves."""
    names = []
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9_;.-]+):\s*$", line)
        if match and not match.group(1).startswith("ofi_"):
            names.append(match.group(1))
    return names


def parse_kernel(raw: Any) -> Kernel | None:
    if not isinstance(raw, dict):
        return None
    scope_text = str(raw.get("ptrace_scope") or "").strip()
    uid = raw.get("uid")
    return Kernel(
        release=str(raw["release"]) if raw.get("release") else None,
        ptrace_scope=int(scope_text) if scope_text.isdigit() else None,
        uid=int(uid) if isinstance(uid, int) else None,
    )


def parse_fabric(raw: Any) -> Fabric | None:
    if not isinstance(raw, dict):
        return None
    if not raw.get("tool"):
        return Fabric(tool=None, providers=())
    run = raw.get("run") or {}
    if run.get("rc") != 0:
        error = (run.get("err") or run.get("out") or "").strip()[-300:] or f"exit {run.get('rc')}"
        return Fabric(tool=str(raw["tool"]), providers=(), error=error)
    return Fabric(tool=str(raw["tool"]), providers=tuple(parse_fi_info_list(run.get("out") or "")))


class KernelFacts(Fact["Kernel | None"]):
    """Kernel release, Yama's ptrace_scope and the uid the probe (and ranks) run as."""

    key = "kernel"
    python = "kernel_facts()"
    parse = staticmethod(parse_kernel)


class FabricProviders(Fact["Fabric | None"]):
    """`fi_info -l` from PATH or oneAPI's bundled libfabric."""

    key = "fabric"
    python = "fabric_facts(ROOT)"
    background = True
    parse = staticmethod(parse_fabric)
