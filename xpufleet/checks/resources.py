"""Resources area: free disk where the model lives, free memory, the clock's offset."""

from __future__ import annotations

from ..facts.node import NodeFacts
from . import FAIL, PASS, SKIP, WARN, Verdict, node_check, verdict
from .expect import Expect

GB = 1 << 30


@node_check("disk.model", "free disk where the model lives")
def check_disk(facts: NodeFacts, expect: Expect) -> Verdict:
    disk = facts.disk
    wanted = f"expected >= {expect.min_free_disk_gb:g} GB free"
    if disk is None:
        return verdict(SKIP, "no model_path to check")
    if disk.error or disk.free_bytes is None:
        return verdict(WARN, f"cannot stat {disk.checked}: {disk.error}, {wanted}")
    free = disk.free_bytes / GB
    where = disk.checked if disk.checked == disk.path else f"{disk.checked} (for {disk.path})"
    status = PASS if free >= expect.min_free_disk_gb else FAIL
    return verdict(status, f"found {free:.1f} GB free at {where}, {wanted}", free_gb=round(free, 2))


@node_check("mem.free", "free host memory")
def check_memory(facts: NodeFacts, expect: Expect) -> Verdict:
    memory = facts.memory
    wanted = f"expected >= {expect.min_free_mem_gb:g} GB available"
    if memory is None:
        return verdict(WARN, f"cannot read /proc/meminfo, {wanted}")
    available = memory.available_kb / (1 << 20)
    total = memory.total_kb / (1 << 20)
    status = PASS if available >= expect.min_free_mem_gb else FAIL
    return verdict(
        status,
        f"found {available:.1f} GB available of {total:.1f} GB, {wanted}",
        available_gb=round(available, 2),
    )


@node_check("clock.offset", "clock offset from the control node")
def check_clock(facts: NodeFacts, expect: Expect) -> Verdict:
    clock = facts.clock
    limit = expect.max_clock_offset_s
    wanted = f"expected within ±{limit:g} s of the control node"
    if clock is None:
        return verdict(WARN, f"no clock reading, {wanted}")
    found = f"found {clock.offset:+.3f} s (±{clock.uncertainty:.3f} s)"
    data = {"offset_s": round(clock.offset, 4), "uncertainty_s": round(clock.uncertainty, 4)}
    if abs(clock.offset) - clock.uncertainty > limit:
        return verdict(FAIL, f"{found}, {wanted}", **data)
    if abs(clock.offset) + clock.uncertainty > limit:
        return verdict(WARN, f"{found}: too uncertain to tell, {wanted}", **data)
    return verdict(PASS, f"{found}, {wanted}", **data)
