"""sycl-ls parser on real output of old and new formats (tests/fixtures 07*)."""

from __future__ import annotations

from doctor_samples import fixture

from xpufleet.facts.sycl import parse_sycl_ls


def test_new_format_max_1100() -> None:
    listing = parse_sycl_ls(fixture("07a"))
    assert listing.format == "new"
    gpus = listing.level_zero_gpus
    assert [d.index for d in gpus] == [0, 1, 2, 3]
    assert {d.name for d in gpus} == {"Intel(R) Data Center GPU Max 1100"}
    assert gpus[0].version == "12.60.7" and gpus[0].driver == "1.3.26918"
    assert gpus[0].platform == "Intel(R) oneAPI Unified Runtime over Level-Zero"
    assert len(listing.opencl_gpus) == 2
    assert listing.opencl_gpus[0].name == "Intel(R) Data Center GPU Max 1100"


def test_new_format_other_gpus() -> None:
    listing = parse_sycl_ls(fixture("07c"))
    assert [d.name for d in listing.level_zero_gpus] == [
        "Intel(R) Arc(TM) A770 Graphics",
        "Intel(R) UHD Graphics 730",
    ]
    assert listing.level_zero_gpus[0].driver == "1.3.29735+27"


def test_old_format_verbose_max_1550_counts_level_zero_once() -> None:
    listing = parse_sycl_ls(fixture("07b"))
    assert listing.format == "old"
    (gpu,) = listing.level_zero_gpus
    assert gpu.name == "Intel(R) Data Center GPU Max 1550"
    assert (gpu.version, gpu.driver) == ("1.3", "1.3.25733")
    backends = sorted(d.backend for d in listing.devices)
    assert backends == ["level_zero", "opencl", "unified_runtime"]


def test_old_format_other_gpu() -> None:
    listing = parse_sycl_ls(fixture("07d"))
    assert listing.format == "old"
    assert [d.name for d in listing.level_zero_gpus] == ["Intel(R) Arc(TM) A770 Graphics"]
    assert listing.opencl_gpus[0].index == 2


def test_old_format_flat_wrapped_eight_tiles_of_four_cards() -> None:
    listing = parse_sycl_ls(fixture("07f"))
    gpus = listing.level_zero_gpus
    assert len(gpus) == 8
    assert [d.index for d in gpus] == list(range(8))
    assert {d.driver for d in gpus} == {"1.3.27191"}  # the wrapped bracket rejoins its line
    assert {d.version for d in gpus} == {"1.3"}


def test_unknown_format_is_not_no_gpu() -> None:
    assert parse_sycl_ls(fixture("08a")).format == "unknown"  # clinfo, not sycl-ls
    assert parse_sycl_ls("Device #0: Max 1550\n").format == "unknown"
    empty = parse_sycl_ls("")
    assert empty.format == "empty" and empty.level_zero_gpus == []
