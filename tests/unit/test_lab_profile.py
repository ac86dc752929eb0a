"""Lab profiles: typed parsing, defaults, and errors that name file, line and key."""

from __future__ import annotations

import pytest

from xpufleet.errors import EXIT_BAD_INPUT
from xpufleet.lab.faults import FAULTS
from xpufleet.lab.profile import (
    DEFAULT_PROFILE,
    PROFILES_DIR,
    Fault,
    LabProfileError,
    NodeSpec,
    load_profile,
    parse_profile,
)


def test_default_profile_is_four_max1550_nodes() -> None:
    profile = load_profile(DEFAULT_PROFILE)
    assert profile.count == 4
    spec = profile.node(3)
    assert (spec.gpu_model, spec.cards, spec.hierarchy, spec.tiles) == ("max1550", 4, "FLAT", 8)
    assert (spec.driver, spec.oneapi, spec.faults) == ("i915", "2025.1", ())
    assert spec == NodeSpec()


def test_faults_profile_has_every_fault_once() -> None:
    profile = load_profile(PROFILES_DIR / "faults.yaml")
    faults = [f for i in range(1, profile.count + 1) for f in profile.node(i).faults]
    assert sorted(f.name for f in faults) == sorted(FAULTS)
    assert profile.node(1).faults == ()
    assert profile.node(7).fault("clock_skew") == Fault("clock_skew", 300)


def test_overrides_inherit_the_defaults() -> None:
    profile = parse_profile(
        "count: 3\n"
        "defaults: {gpu_model: max1100, cards: 2, hierarchy: COMPOSITE}\n"
        "nodes:\n"
        "  node2: {oneapi: '2024.2', faults: [no_driver, {clock_skew: -90}, {full_disk: 4M}]}\n"
    )
    node1, node2 = profile.node(1), profile.node(2)
    assert (node1.gpu_model, node1.cards, node1.tiles, node1.oneapi) == ("max1100", 2, 2, "2025.1")
    assert (node2.gpu_model, node2.hierarchy, node2.oneapi) == ("max1100", "COMPOSITE", "2024.2")
    assert node2.faults == (
        Fault("no_driver"),
        Fault("clock_skew", -90),
        Fault("full_disk", "4M"),
    )
    assert profile.node(3) == node1


def test_fault_defaults_apply_without_a_parameter() -> None:
    spec = parse_profile(
        "defaults: {faults: [blocked_port, clock_skew, old_oneapi, {blocked_egress: 6379}]}"
    ).node(1)
    assert [f.param for f in spec.faults] == ["rendezvous_port", 300, "2023.2", 6379]


def test_versions_stay_strings() -> None:
    with pytest.raises(LabProfileError) as caught:
        parse_profile("defaults:\n  oneapi: 2025.10\n", "p.yaml")
    assert "'2025.10'" in str(caught.value)  # not read as the float 2025.1


def test_hardware_hash_ignores_faults() -> None:
    base = NodeSpec()
    assert base.hardware_hash() == NodeSpec(faults=(Fault("dead_node"),)).hardware_hash()
    assert base.hardware_hash() != NodeSpec(cards=2).hardware_hash()


@pytest.mark.parametrize(
    ("text", "line", "key", "words"),
    [
        ("count: 4\ndefaults:\n  cards: four\n", 3, "defaults.cards", "integer"),
        ("count: 4\ndefaults:\n  cards: 40\n", 3, "defaults.cards", "between 1 and 16"),
        ("defaults:\n  gpu_model: max9999\n", 2, "defaults.gpu_model", "not one of"),
        ("defaults:\n  hierarchy: flat\n", 2, "defaults.hierarchy", "not one of"),
        ("defaults:\n  colour: blue\n", 2, "defaults.colour", "unknown setting"),
        ("count: 2\nnodez: {}\n", 2, "nodez", "unknown key"),
        ("count: 0\n", 1, "count", "between 1 and 250"),
        ("nodes:\n  nod2: {cards: 2}\n", 2, "nodes.nod2", "node1, node2"),
        ("nodes:\n  node2:\n    faults: [melted]\n", 3, "nodes.node2.faults", "unknown fault"),
        ("defaults:\n  faults: [{no_driver: 1}]\n", 2, "defaults.faults.no_driver", "no param"),
        ("defaults:\n  faults: [dead_node, dead_node]\n", 2, "defaults.faults", "twice"),
        ("defaults:\n  faults: [{blocked_port: 0}]\n", 2, "defaults.faults.blocked_port", "port"),
        ("defaults:\n  faults: [{blocked_port: w}]\n", 2, "defaults.faults.blocked_port", "sglang"),
        (
            "defaults:\n  faults: [{blocked_egress: 0}]\n",
            2,
            "defaults.faults.blocked_egress",
            "port",
        ),
        ("defaults:\n  faults: [{clock_skew: 0}]\n", 2, "defaults.faults.clock_skew", "no fault"),
        ("defaults:\n  faults: [{full_disk: lots}]\n", 2, "defaults.faults.full_disk", "size"),
        ("defaults:\n  faults: [{old_oneapi: '1.1'}]\n", 2, "defaults.faults.old_oneapi", "oneAPI"),
        ("defaults:\n  xpu_smi: latest\n", 2, "defaults.xpu_smi", "dotted version"),
        ("defaults: [1, 2]\n", 1, "defaults", "mapping"),
        ("count: 1\ncount: 2\n", 2, "count", "duplicate"),
    ],
)
def test_bad_profiles_name_file_line_and_key(text: str, line: int, key: str, words: str) -> None:
    with pytest.raises(LabProfileError) as caught:
        parse_profile(text, "lab.yaml")
    error = caught.value
    assert (error.file, error.line, error.key) == ("lab.yaml", line, key)
    assert words in error.message
    assert error.exit_code == EXIT_BAD_INPUT
    assert str(error).startswith(f"lab.yaml:{line}: key '{key}': ")


def test_yaml_syntax_error_names_the_line() -> None:
    with pytest.raises(LabProfileError) as caught:
        parse_profile("count: 4\ndefaults:\n  cards: [1\n", "broken.yaml")
    assert caught.value.file == "broken.yaml" and caught.value.line is not None
    assert "YAML error" in caught.value.message


def test_missing_profile_file(tmp_path) -> None:
    with pytest.raises(LabProfileError) as caught:
        load_profile(tmp_path / "nope.yaml")
    assert caught.value.file == str(tmp_path / "nope.yaml")


def test_empty_profile_means_defaults() -> None:
    profile = parse_profile("")
    assert profile.count == 4 and profile.node(1) == NodeSpec()
