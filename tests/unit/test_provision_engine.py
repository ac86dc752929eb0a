"""The batched probe, the push receiver and the failure budget, run through a real local sh."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from xpufleet.facts.batch import probe_script, split_probe
from xpufleet.provision.engine import ProvisionOptions, failure_budget_spent
from xpufleet.provision.steps import Directory, File
from xpufleet.provision.transfer import EXIT_MISMATCH, receive_command


def sh(
    script: str, stdin: bytes = b"", cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", script], input=stdin, capture_output=True, check=False, cwd=cwd
    )


def test_probe_sections_survive_failing_and_exiting_snippets(tmp_path: Path) -> None:
    snippets = ["echo one", "exit 3", "echo two; echo lines; false", "echo '@@ not a boundary'"]
    out = sh(probe_script(snippets, "@@b123")).stdout.decode()
    assert split_probe(out, "@@b123", 4) == ["one", "", "two\nlines", "@@ not a boundary"]


def test_probe_of_real_steps_decides_right(tmp_path: Path) -> None:
    target = tmp_path / "env.sh"
    target.write_text("old\n")
    steps = [
        Directory("d", path=str(tmp_path / "new"), mode=0o755),
        File("f", path=str(target), content=b"new\n", mode=0o644),
        File("g", path=str(tmp_path / "same"), content=b"x\n", mode=0o600),
    ]
    (tmp_path / "same").write_text("x\n")
    os.chmod(tmp_path / "same", 0o600)
    os.chmod(target, 0o644)
    out = sh(probe_script([s.probe() for s in steps], "@@z")).stdout.decode()
    states = split_probe(out, "@@z", 3)
    decisions = [s.decide(st, diff=True) for s, st in zip(steps, states, strict=True)]
    assert [d.status for d in decisions] == ["changed", "changed", "ok"]
    assert "-old\n+new\n" in (decisions[1].diff or "")


def test_receiver_renames_only_a_complete_verified_file(tmp_path: Path) -> None:
    data = os.urandom(300_000)
    sha = hashlib.sha256(data).hexdigest()
    cmd = receive_command(str(tmp_path / "cache"), "w-1.0-py3-none-any.whl", len(data), sha)
    done = sh(cmd, data)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "cache" / "w-1.0-py3-none-any.whl").read_bytes() == data
    # cut off half-way: nothing under the final name, no temp file left
    cut = receive_command(str(tmp_path / "c2"), "w.whl", len(data), sha)
    result = sh(cut, data[: len(data) // 2])
    assert result.returncode == EXIT_MISMATCH
    assert b"cut off: received 150000 of 300000 bytes" in result.stderr
    assert list((tmp_path / "c2").iterdir()) == []
    # right size, wrong bytes: refused by the hash
    bad = sh(cut, bytes(len(data)))
    assert bad.returncode == EXIT_MISMATCH and b"sha256 mismatch" in bad.stderr
    assert list((tmp_path / "c2").iterdir()) == []


def test_receiver_quotes_hostile_names(tmp_path: Path) -> None:
    name = "x$(touch pwned)';touch pwned2'.whl"
    cmd = receive_command(str(tmp_path / "d"), name, 2, None)
    assert sh(cmd, b"z", cwd=tmp_path).returncode == EXIT_MISMATCH  # message path, too
    assert (
        sh(receive_command(str(tmp_path / "d"), name, 1, None), b"z", cwd=tmp_path).returncode == 0
    )
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()
    assert (tmp_path / "d" / name).read_bytes() == b"z"


@pytest.mark.parametrize(
    ("failed", "total", "options", "spent"),
    [
        (0, 4, ProvisionOptions(fail_fast=True), False),
        (1, 4, ProvisionOptions(fail_fast=True), True),
        (3, 4, ProvisionOptions(), False),
        (1, 4, ProvisionOptions(max_fail_percentage=25), False),
        (2, 4, ProvisionOptions(max_fail_percentage=25), True),
        (1, 4, ProvisionOptions(max_fail_percentage=0), True),
    ],
)
def test_failure_budget(failed: int, total: int, options: ProvisionOptions, spent: bool) -> None:
    assert failure_budget_spent(failed, total, options) is spent
