"""dpkg/rpm parsers on real output (tests/fixtures 12b, 12c)."""

from __future__ import annotations

from doctor_samples import fixture

from xpufleet.facts.packages import parse_dpkg, parse_rpm


def test_dpkg_status_stanzas() -> None:
    found = parse_dpkg(fixture("12b"))
    assert set(found) == {"intel-level-zero-gpu", "intel-opencl-icd"}
    assert found["intel-level-zero-gpu"].version == "1.3.29138.29-881~22.04"
    assert found["intel-opencl-icd"].version == "24.13.29138.29-881~22.04"
    assert all(p.installed for p in found.values())


def test_dpkg_status_not_installed() -> None:
    text = "Package: level-zero\nStatus: deinstall ok config-files\nVersion: 1.9\n"
    assert parse_dpkg(text)["level-zero"].installed is False


def test_dpkg_list_rows() -> None:
    found = parse_dpkg(fixture("12c"))
    assert found["level-zero"].version == "1.5.0.1-main"
    assert found["intel-level-zero-gpu"].installed


def test_rpm_query_lines() -> None:
    text = (
        "level-zero 1.20.2-1.el9\n"
        "package intel-opencl-icd is not installed\n"
        "intel-level-zero-gpu-1.3.29138.29-1.el9.x86_64\n"
    )
    found = parse_rpm(text)
    assert found["level-zero"].version == "1.20.2-1.el9"
    assert found["intel-level-zero-gpu"].version == "1.3.29138.29-1.el9"
    assert "intel-opencl-icd" not in found
