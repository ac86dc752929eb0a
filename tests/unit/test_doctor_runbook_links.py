"""Every runbook link doctor can print resolves to a real heading of its runbook.

The ids come from the code (the check registry that `result()` enforces), not from a
hand-written list; each id has its own section with symptom, confirmation, fix and
verification."""

from __future__ import annotations

import re
from pathlib import Path

from doctor_samples import facts, healthy_raw, patched

import xpufleet.doctor  # noqa: F401 - importing registers every node and cluster check
from xpufleet.checks import REGISTRY, result, runbook_link
from xpufleet.checks.node import run_node_checks
from xpufleet.runbooks import anchors, slug

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbooks" / "doctor.md"


def sections() -> dict[str, str]:
    """Level-2 sections of the runbook: heading -> body."""
    parts = re.split(r"^## (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def test_the_registry_has_every_check_of_the_issue() -> None:
    assert len(REGISTRY) >= 30
    assert {"gpu.driver", "cluster.plan", "net.hostname", "proc.ports"} <= set(REGISTRY)


def test_every_link_doctor_can_print_lands_on_a_heading() -> None:
    known = anchors(RUNBOOK)
    for check_id, info in REGISTRY.items():
        path, _, anchor = info.runbook.partition("#")
        assert (ROOT / path).resolve() == RUNBOOK.resolve(), check_id
        assert anchor == slug(check_id), check_id
        assert anchor in known, f"{check_id}: no heading with anchor #{anchor}"


def test_every_check_has_a_full_section() -> None:
    found = sections()
    for check_id in REGISTRY:
        body = found.get(check_id)
        assert body is not None, f"no section '## {check_id}'"
        for part in ("**Symptom.**", "**Confirm by hand.**", "**Fix.**", "**Verify.**"):
            assert part in body, f"{check_id}: no {part}"


def test_no_stale_sections() -> None:
    assert set(sections()) == set(REGISTRY)


def test_emitted_failures_carry_registered_links() -> None:
    raw = patched(**{"oneapi.exists": False, "disk.free": 0, "nic.exists": False})
    raw["modules"]["i915"]["present"] = False
    emitted = run_node_checks(facts(raw), __import__("doctor_samples").expect())
    failing = [r for r in emitted if r.status in ("fail", "warn")]
    assert len(failing) >= 4
    for item in failing:
        assert item.runbook == REGISTRY[item.id].runbook == runbook_link(item.id)
    assert healthy_raw()  # the sample itself is not mutated


def test_an_unregistered_id_cannot_be_emitted() -> None:
    try:
        result("gpu.made_up", "fail", "x")
    except KeyError:
        return
    raise AssertionError("an unregistered id was accepted")
