"""docs/design.md's worked example, run: a new fact and a check on it are two classes
(plus the runbook section) — the probe, the sh fallback, NodeFacts and the check list
pick them up from the registries, nothing else is edited."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from doctor_samples import expect
from test_facts_probe import run_probe_locally, sh_only_bin

from xpufleet.checks import NODE_CHECKS, PASS, REGISTRY, SKIP, WARN, Verdict, node_check, verdict
from xpufleet.checks.node import run_node_checks
from xpufleet.facts.node import NodeFacts, parse_facts
from xpufleet.facts.probe import build_script, probe_params
from xpufleet.facts.registry import FACTS, Fact
from xpufleet.host import Host


@pytest.fixture
def example() -> Iterator[None]:
    """Register the example's fact and check for one test, then take them out again."""
    facts_before, checks_before = list(FACTS), list(NODE_CHECKS)

    class OpenFiles(Fact["tuple[int, int] | None"]):
        """RLIMIT_NOFILE (soft, hard) of the login; -1 = unlimited."""

        key = "nofile"
        python = '__import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)'
        sh = 'printf \'[%s, %s]\' "$(ulimit -Sn)" "$(ulimit -Hn)"'

        @staticmethod
        def parse(raw: Any) -> tuple[int, int] | None:
            return (int(raw[0]), int(raw[1])) if isinstance(raw, list) else None

    @node_check("proc.nofile", "open-file limit for the ranks")
    def check_nofile(facts: NodeFacts, expect: object) -> Verdict:
        if facts.nofile is None:
            return verdict(SKIP, "not probed")
        soft, _hard = facts.nofile
        wanted = "expected ulimit -n >= 65536"
        if 0 <= soft < 65536:
            return verdict(WARN, f"found ulimit -n {soft}, {wanted}", soft=soft)
        return verdict(PASS, f"found ulimit -n {soft}, {wanted}")

    check_nofile.func.__module__ = "xpufleet.checks.resources"  # as if written there
    try:
        yield
    finally:
        FACTS[:] = facts_before
        NODE_CHECKS[:] = checks_before
        REGISTRY.pop("proc.nofile", None)


def test_a_new_fact_and_check_reach_the_probe_and_the_report(example: None, tmp_path) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    host = Host("node1", "127.0.0.1", vars={"model_path": str(tmp_path)})
    raw = run_probe_locally(build_script(probe_params(host)))  # python3 on this machine
    assert raw["nofile"] == [soft, hard]
    results = {r.id: r for r in run_node_checks(parse_facts("node1", raw), expect())}
    found = results["proc.nofile"]
    assert found.status == (WARN if 0 <= soft < 65536 else PASS)
    assert f"found ulimit -n {soft}" in found.message

    bin_dir = sh_only_bin(tmp_path)  # no python3: the fact's sh snippet answers
    raw = run_probe_locally(build_script(probe_params(host)), env={"PATH": str(bin_dir)})
    assert raw["probe"]["kind"] == "sh"
    if raw.get("nofile") is not None:  # `ulimit -Sn` may say "unlimited": then absent
        assert raw["nofile"][0] == soft


def test_the_example_registers_its_fact_and_check(example: None) -> None:
    assert any(f.key == "nofile" for f in FACTS)
    assert "proc.nofile" in REGISTRY


def test_after_the_example_the_registries_are_as_before() -> None:
    assert not any(f.key == "nofile" for f in FACTS)
    assert "proc.nofile" not in REGISTRY
