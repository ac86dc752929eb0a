"""Steps decide from their probe output (pure): ok, changed (what and why), failed."""

from __future__ import annotations

import base64
import hashlib
import json

from xpufleet.nodestate import InstalledWheel, render_node_state
from xpufleet.provision.manifest import WheelEntry
from xpufleet.provision.steps import Command, Directory, File, Packages, unsatisfied
from xpufleet.provision.wheels import Wheel

SHA = "cd" * 32


def test_directory() -> None:
    d = Directory("provision.x.dir", path="/opt/x", mode=0o755)
    assert d.decide("absent").status == "changed"
    assert d.decide("755").status == "ok"
    changed = d.decide("700")
    assert changed.status == "changed" and "chmod 755" in changed.message
    assert d.decide("notdir").status == "failed"


def file_state(content: bytes | None, mode: str = "644", with_content: bool = True) -> str:
    if content is None:
        return "absent"
    lines = [f"mode {mode}", f"sha {hashlib.sha256(content).hexdigest()}"]
    if with_content:
        lines.append("content " + base64.b64encode(content).decode())
    return "\n".join(lines)


def test_file_ok_changed_and_diff() -> None:
    f = File("provision.x.f", path="/opt/x/env.sh", content=b"a=1\nb=2\n", mode=0o644)
    assert f.decide(file_state(b"a=1\nb=2\n", with_content=False)).status == "ok"
    old = f.decide(file_state(b"a=1\nb=3\n"), diff=True)
    assert old.status == "changed" and old.message.startswith("update")
    assert "-b=3\n" in (old.diff or "") and "+b=2\n" in (old.diff or "")
    assert f.decide(file_state(b"a=1\nb=3\n")).diff is None  # no --diff, no diff
    created = f.decide("absent", diff=True)
    assert created.status == "changed" and "--- /dev/null" in (created.diff or "")
    chmod = f.decide(file_state(b"a=1\nb=2\n", mode="600", with_content=False))
    assert chmod.status == "changed" and "chmod 644" in chmod.message


def test_secret_file_never_shows_content() -> None:
    f = File(
        "provision.x.s", path="/s", content=b"export HF_TOKEN=hunter2\n", mode=0o600, secret=True
    )
    d = f.decide("absent", diff=True)
    assert "hunter2" not in (d.diff or "") and "hidden" in (d.diff or "")
    assert "base64" not in f.probe()  # the probe never reads a secret file's content back


def test_packages_pins() -> None:
    reqs = ["setuptools==75.6.0", "packaging==24.2", "msgspec", "py-cpuinfo>=9"]
    have = {"setuptools": "75.6.0", "packaging": "23.0", "msgspec": None, "py-cpuinfo": "9.0.0"}
    assert unsatisfied(reqs, have) == ["packaging==24.2", "msgspec"]
    p = Packages("provision.p", python="/v/bin/python", requirements=reqs)
    decision = p.decide(json.dumps(have))
    assert decision.status == "changed"
    assert (
        "packaging==24.2 (has 23.0)" in decision.message
        and "msgspec (has none)" in decision.message
    )
    ok = dict(have, packaging="24.2", msgspec="0.19")
    assert p.decide(json.dumps(ok)).status == "ok"
    assert p.decide("nopython").status == "changed"


def test_command_guard() -> None:
    c = Command(
        "provision.c",
        guard="test -x /v/bin/python",
        command="python3 -m venv /v",
        action="create venv /v",
        present="venv /v",
    )
    assert c.decide("done").status == "ok"
    assert c.decide("todo").message == "create venv /v"


def wheel_state(recorded: dict[str, InstalledWheel], installed: str) -> str:
    text = render_node_state(recorded).encode()
    return f"recorded {base64.b64encode(text).decode()}\ninstalled {installed}"


def test_wheel_skipped_only_when_same_sha_and_really_installed() -> None:
    e = WheelEntry("sglang", "0.4.3+lab", "sglang-0.4.3+lab-py3-none-any.whl", SHA, 10)
    w = Wheel(
        "provision.wheels.sglang",
        entry=e,
        python="/v/bin/python",
        state_dir="/s",
        cache_dir="/s/wheels",
    )
    same = {"sglang": InstalledWheel("sglang", "0.4.3+lab", SHA)}
    assert w.decide(wheel_state(same, "0.4.3+lab")).status == "ok"
    other = {"sglang": InstalledWheel("sglang", "0.4.3+lab", "ee" * 32)}
    d = w.decide(wheel_state(other, "0.4.3+lab"))
    assert d.status == "changed" and "sha256 eeeeeeeeeeee" in d.message
    # recorded, but the dist is gone (someone uninstalled it): reinstall
    assert "not installed" in w.decide(wheel_state(same, "none")).message
    # installed by hand, not through provision: no record -> push
    assert w.decide(wheel_state({}, "0.4.3+lab")).status == "changed"
    assert "node has 0.4.2" in w.decide(wheel_state(same, "0.4.2")).message
    assert w.decide("").status == "changed"
