"""kernel.version, kernel.ptrace_scope and net.fabric on facts; `fi_info -l` parsed from
real output (fixtures 15a/15b, sources beside them)."""

from __future__ import annotations

from doctor_samples import fixture, patched
from test_checks_node import statuses

from xpufleet.facts.kernel import parse_fi_info_list

VERBS = fixture("15a_fi_info_l_libfabric_1.20.0_verbs.txt")
TCP_ONLY = fixture("15b_fi_info_l_libfabric_1.19.0amzn_tcp_PARTIAL.txt")


def test_fi_info_list_parses_core_providers_of_real_output() -> None:
    assert parse_fi_info_list(VERBS) == [
        "usnic", "verbs", "shm", "udp", "tcp", "sockets", "off_coll", "sm2",
    ]  # fmt: skip
    assert parse_fi_info_list(TCP_ONLY) == ["shm", "udp", "tcp", "sockets"]
    assert parse_fi_info_list("") == []


def test_tcp_with_a_faster_provider_warns_and_names_it() -> None:
    got = statuses(patched(**{"fabric.run.out": VERBS}))["net.fabric"]
    assert got.status == "warn"
    assert "verbs is available" in got.message
    assert statuses(patched(**{"fabric.run.out": TCP_ONLY}))["net.fabric"].status == "pass"
    assert (
        statuses(patched(**{"fabric.run.out": VERBS}), fi_provider="verbs")["net.fabric"].status
        == "pass"
    )


def test_configured_provider_missing_fails_and_no_fi_info_skips() -> None:
    got = statuses(patched(**{"fabric.run.out": TCP_ONLY}), fi_provider="cxi")["net.fabric"]
    assert got.status == "fail" and "expected fi_provider cxi" in got.message
    assert statuses(patched(**{"fabric": {"tool": None}}))["net.fabric"].status == "skip"
    broken = patched(**{"fabric.run": {"rc": 1, "out": "", "err": "fi_getinfo: -61"}})
    assert statuses(broken)["net.fabric"].status == "warn"


def test_kernel_version_for_pidfd() -> None:
    old = patched(**{"kernel.release": "4.18.0-553.el8_10.x86_64"})
    got = statuses(old)["kernel.version"]
    assert got.status == "fail" and "4.18.0" in got.message and ">= 5.6" in got.message
    assert statuses(old, ccl_ze_ipc_exchange="drmfd")["kernel.version"].status == "skip"
    assert statuses(patched(**{"kernel.release": "5.6.0"}))["kernel.version"].status == "pass"


def test_ptrace_scope_depends_on_the_user() -> None:
    # scope 1 (Ubuntu's default): only descendants; sibling ranks of a non-root user fail
    user = patched(**{"kernel.uid": 1000, "kernel.ptrace_scope": "1\n"})
    got = statuses(user)["kernel.ptrace_scope"]
    assert got.status == "fail" and "uid 1000" in got.message
    assert statuses(user, ccl_ze_ipc_exchange="sockets")["kernel.ptrace_scope"].status == "skip"
    assert (
        statuses(patched(**{"kernel.uid": 1000, "kernel.ptrace_scope": "0\n"}))[
            "kernel.ptrace_scope"
        ].status
        == "pass"
    )
    # root has CAP_SYS_PTRACE: scope 1 and 2 are fine, 3 blocks everyone
    assert statuses()["kernel.ptrace_scope"].status == "pass"
    root3 = patched(**{"kernel.ptrace_scope": "3\n"})
    assert statuses(root3)["kernel.ptrace_scope"].status == "fail"
    no_yama = patched(**{"kernel.ptrace_scope": None, "kernel.uid": 1000})
    assert statuses(no_yama)["kernel.ptrace_scope"].status == "pass"
