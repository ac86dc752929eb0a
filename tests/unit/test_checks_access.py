"""Doctor's checks for a login that is not root: render nodes, locked memory, paths."""

from __future__ import annotations

from typing import Any

from doctor_samples import expect, facts, healthy_raw

from xpufleet.checks.access import check_gpu_access, check_memlock, check_paths
from xpufleet.checks.node import run_node_checks


def render_nodes(**fields: Any) -> list[dict[str, Any]]:
    """The sample's four render nodes, with `fields` changed on each."""
    return [{**node, **fields} for node in healthy_raw()["access"]["render_nodes"]]


def with_access(**access: Any) -> Any:
    """The healthy sample's access facts as a login `alice` (not root) sees them."""
    raw = healthy_raw()
    home = "/home/alice"
    paths = {
        name: {"path": f"{home}/{leaf}", "checked": home, "writable": True}
        for name, leaf in (("install_dir", "x"), ("state_dir", "s"))
    }
    raw["access"].update({"uid": 1001, "user": "alice", "paths": paths, **access})
    return facts(raw)


def test_render_nodes_the_login_may_not_open_fail_naming_the_group() -> None:
    item = check_gpu_access(with_access(render_nodes=render_nodes(rw=False)), expect())
    assert item.status == "fail"
    assert "permission denied on /dev/dri/renderD128" in item.message
    assert "usermod -aG render alice" in item.message
    assert item.runbook and item.runbook.endswith("#accessgpu")
    assert check_gpu_access(with_access(), expect()).status == "pass"


def test_unreadable_or_absent_render_nodes_are_skips_with_a_reason() -> None:
    gone = check_gpu_access(with_access(render_nodes=[]), expect())
    assert gone.status == "skip" and "renderD" in gone.message
    err = [{"path": "/dev/dri/renderD128", "error": "Permission denied"}]
    item = check_gpu_access(with_access(render_nodes=err), expect())
    assert item.status == "skip" and "Permission denied" in item.message
    raw = healthy_raw()
    raw.pop("access", None)
    assert check_gpu_access(facts(raw), expect()).status == "skip"


def test_memlock_matters_for_rdma_providers_only() -> None:
    limited = [8 << 20, 8 << 20]
    assert check_memlock(with_access(memlock=limited), expect()).status == "pass"
    item = check_memlock(with_access(memlock=limited, fi_provider="cxi"), expect())
    assert item.status == "warn" and "8192 KiB" in item.message
    assert check_memlock(with_access(fi_provider="cxi"), expect()).status == "pass"  # unlimited


def test_paths_the_login_cannot_write() -> None:
    paths = {
        "install_dir": {"path": "/opt/xpufleet", "checked": "/opt", "writable": False},
        "state_dir": {"path": "/home/alice/s", "checked": "/home/alice", "writable": True},
    }
    item = check_paths(with_access(paths=paths), expect())
    assert item.status == "fail"
    assert "install_dir /opt/xpufleet (nearest existing: /opt)" in item.message
    assert "state_dir" not in item.data["denied"]
    assert check_paths(with_access(paths=paths, become=True), expect()).status == "pass"
    assert check_paths(with_access(paths=paths, uid=0, user="root"), expect()).status == "pass"


def test_access_checks_run_with_the_node_checks() -> None:
    ids = {r.id for r in run_node_checks(with_access(), expect())}
    assert {"access.gpu", "access.memlock", "access.paths"} <= ids


def test_gpu_holders_unreadable_to_a_login_that_is_not_root_are_a_skip() -> None:
    from xpufleet.checks.processes import check_gpu_holders

    raw = healthy_raw()
    raw["busy"]["complete"] = False
    assert check_gpu_holders(facts(raw), expect()).status == "pass"  # root: a vanished pid
    raw["access"].update(uid=1001, user="alice")
    item = check_gpu_holders(facts(raw), expect())
    assert item.status == "skip" and "not root (alice)" in item.message
