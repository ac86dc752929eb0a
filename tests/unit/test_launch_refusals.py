"""`invoke launch` refuses an oversubscribed plan with exit 2 before any SSH: the
inventory's hosts are addresses where nothing listens, so reaching them would be exit 3."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

INVOKE = str(Path(sys.executable).parent / "invoke")


def run_launch(tmp_path: Path, *flags: str, **variables: object) -> subprocess.CompletedProcess:
    hosts = {f"node{i}": {"ansible_host": f"127.0.0.{200 + i}", "ansible_port": 1} for i in (1, 2)}
    doc = {"all": {"vars": {"model_size_gb": 100, "nic": "hsn0", **variables},
                   "hosts": hosts}}  # fmt: skip
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [INVOKE, "launch", *flags, "--hosts", str(inventory), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_two_ranks_on_one_device_exit_2_before_ssh(tmp_path: Path) -> None:
    proc = run_launch(tmp_path, "--tp", "8", "--nnodes", "2", device_ids=[0, 1])
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "oversubscribed: 4 rank(s) per node" in proc.stdout + proc.stderr
    proc = run_launch(tmp_path, "--tp", "16", "--nnodes", "1")
    assert proc.returncode == 2
    assert "oversubscribed" in proc.stdout + proc.stderr


def test_plan_explain_gives_every_variable_a_reason(tmp_path: Path) -> None:
    proc = run_launch(tmp_path, "--tp", "16", "--plan", "--explain")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)["explain"]
    names = {row["name"] for row in rows}
    assert "LOCAL_WORLD_SIZE" not in names and "LOCAL_RANK" not in names
    assert {"CCL_LOCAL_RANK", "CCL_LOCAL_SIZE", "ZE_AFFINITY_MASK", "FI_TCP_IFACE"} <= names
    assert all(row["reason"] for row in rows)
