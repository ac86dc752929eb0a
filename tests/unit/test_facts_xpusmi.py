"""xpu-smi parsers on real output (tests/fixtures 01-04): tables, JSON, versions."""

from __future__ import annotations

from doctor_samples import fixture

from xpufleet.facts.devices import model_from_pci_id, model_key_from_name, normalize_pci_id
from xpufleet.facts.xpusmi import (
    parse_discovery,
    parse_discovery_json,
    parse_discovery_text,
    parse_version,
)


def test_discovery_table_of_six_max_1550() -> None:
    found = parse_discovery_text(fixture("01_"))
    assert found.format == "table"
    assert [d.device_id for d in found.devices] == [0, 1, 2, 3, 4, 5]
    assert {d.name for d in found.devices} == {"Intel(R) Data Center GPU Max 1550"}
    assert found.devices[3].pci_bdf == "0001:18:00.0"
    assert found.devices[5].drm_device == "/dev/dri/card5"
    assert found.devices[0].uuid == "00000000-0000-0000-926a-83c28645e226"
    # the 1.x table names no PCI id: the model comes from the name (or sysfs)
    assert found.devices[0].pci_device_id is None
    assert model_key_from_name(found.devices[0].name) == "max1550"


def test_discovery_table_old_uuid_layout_takes_pci_id_from_the_name() -> None:
    found = parse_discovery_text(fixture("01b_"))
    assert found.format == "table"
    (device,) = found.devices
    assert device.uuid == "00000000-0000-0000-0000-020a00008086"
    assert device.pci_device_id == "020a"
    assert device.drm_device is None
    assert model_from_pci_id(device.pci_device_id) is None  # not a Max card


def test_discovery_detail_table_has_tiles_and_memory() -> None:
    (device,) = parse_discovery_text(fixture("02_")).devices
    assert device.tiles == 2
    assert device.memory_mib == 32768.0


def test_discovery_json_both_layouts() -> None:
    for prefix in ("03_", "03b_"):
        found = parse_discovery_json(fixture(prefix))
        assert found.format == "json"
        (device,) = found.devices
        assert device.pci_device_id == "020a"
        assert device.pci_bdf == "0000:4d:00.0"


def test_json_fragment_and_garbage_are_unknown_not_empty() -> None:
    assert parse_discovery_json(fixture("02e_")).format == "unknown"
    assert parse_discovery_json('{"devices": []}').format == "unknown"
    assert parse_discovery_text("Segmentation fault\n").format == "unknown"
    assert parse_discovery_text(fixture("04_")).format == "unknown"
    assert parse_discovery_text("").format == "empty"


def test_discovery_prefers_json_and_falls_back_to_the_table() -> None:
    assert parse_discovery(fixture("03_"), fixture("01_")).format == "json"
    fallback = parse_discovery("not json", fixture("01_"))
    assert fallback.format == "table" and len(fallback.devices) == 6
    assert parse_discovery(None, "garbage\n").format == "unknown"


def test_versions_of_two_releases() -> None:
    new = parse_version(fixture("04_"))
    assert (new.cli, new.service, new.level_zero) == ("1.2.39.20240906",) * 2 + ("1.20.2",)
    assert new.major == 1
    old = parse_version(fixture("04c_"))
    assert (old.cli, old.level_zero) == ("1.0.0.20211217", "1.6.2")


def test_version_unknown_format_and_v2_banner() -> None:
    assert parse_version(fixture("04b_")).format == "unknown"  # help text, not -v
    assert parse_version("").format == "empty"
    banner = parse_version(fixture("06e_"))
    assert banner.cli == "2.0" and banner.major == 2


def test_pci_ids_of_reference_section_4() -> None:
    assert normalize_pci_id("0x0BD5") == "0bd5"
    assert normalize_pci_id("0xbd6") == "0bd6"
    assert normalize_pci_id(0x0BDA) == "0bda"
    assert normalize_pci_id("zz") is None
    assert model_from_pci_id("0x0bd5").key == "max1550"  # type: ignore[union-attr]
    assert model_from_pci_id("0b69").tiles == 2  # type: ignore[union-attr]
    assert model_from_pci_id("0bd7").memory_gb == 96  # type: ignore[union-attr]
    max1100 = model_from_pci_id("0x0bda")
    assert max1100 is not None and (max1100.tiles, max1100.memory_gb) == (1, 48)
    assert model_from_pci_id("0x56c0") is None
