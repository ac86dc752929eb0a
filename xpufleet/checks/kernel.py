"""Kernel area: what oneCCL's pidfd IPC needs (kernel >= 5.6, Yama ptrace_scope)."""

from __future__ import annotations

from ..facts.node import NodeFacts
from . import FAIL, PASS, SKIP, WARN, Verdict, node_check, verdict
from .expect import Expect

#: pidfd_open (5.3) and pidfd_getfd (5.6): oneCCL's CCL_ZE_IPC_EXCHANGE=pidfd needs both
PIDFD_KERNEL = (5, 6)


@node_check("kernel.version", "kernel new enough for oneCCL's pidfd IPC")
def check_kernel_version(facts: NodeFacts, expect: Expect) -> Verdict:
    kernel = facts.kernel
    if expect.ccl_ze_ipc_exchange != "pidfd":
        return verdict(
            SKIP,
            f"ccl_ze_ipc_exchange is {expect.ccl_ze_ipc_exchange}: no pidfd IPC, "
            "no kernel requirement",
        )
    wanted = "expected >= 5.6 for ccl_ze_ipc_exchange pidfd (pidfd_getfd)"
    if kernel is None or kernel.version is None:
        shown = kernel.release if kernel and kernel.release else "no kernel release"
        return verdict(WARN, f"found {shown}, {wanted}")
    if kernel.version < PIDFD_KERNEL:
        return verdict(
            FAIL,
            f"found kernel {kernel.release}, {wanted}; or set ccl_ze_ipc_exchange: drmfd",
        )
    return verdict(PASS, f"found kernel {kernel.release}, {wanted}")


@node_check("kernel.ptrace_scope", "Yama ptrace_scope lets ranks take each other's fds")
def check_ptrace_scope(facts: NodeFacts, expect: Expect) -> Verdict:
    """pidfd_getfd needs ptrace-attach rights on the peer rank: with Yama, scope 1 allows
    only descendants (the ranks are siblings), 2 only CAP_SYS_PTRACE, 3 nobody."""
    kernel = facts.kernel
    if expect.ccl_ze_ipc_exchange != "pidfd":
        return verdict(
            SKIP,
            f"ccl_ze_ipc_exchange is {expect.ccl_ze_ipc_exchange}: ptrace_scope does not apply",
        )
    if kernel is None or kernel.uid is None:
        return verdict(WARN, "found no ptrace_scope/uid facts, expected them")
    user = "root" if kernel.uid == 0 else f"uid {kernel.uid}"
    if kernel.ptrace_scope is None:
        return verdict(
            PASS,
            f"found no Yama (classic ptrace rules) for {user}, expected ranks of one user "
            "to reach each other",
        )
    limit = 2 if kernel.uid == 0 else 0
    wanted = (
        f"expected kernel.yama.ptrace_scope <= {limit} for ranks running as {user} with "
        "ccl_ze_ipc_exchange pidfd"
    )
    if kernel.ptrace_scope > limit:
        return verdict(
            FAIL,
            f"found kernel.yama.ptrace_scope = {kernel.ptrace_scope}, {wanted} "
            "(or ccl_ze_ipc_exchange: drmfd|sockets)",
        )
    return verdict(PASS, f"found kernel.yama.ptrace_scope = {kernel.ptrace_scope}, {wanted}")
