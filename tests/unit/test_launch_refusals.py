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


def test_a_launch_mixing_ssh_and_slurm_hosts_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    """node2 uses the slurm connector, node1 ssh (the default): exit 2 naming the file,
    line and key where `connector` was set; no srun/scontrol was run (stand-ins on PATH
    record any call) and no SSH (nothing listens on the hosts' ports: that is exit 3)."""
    import os

    calls = tmp_path / "calls"
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for tool in ("srun", "scontrol", "squeue", "sbcast"):
        (stubs / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {calls}\nexit 1\n')
        (stubs / tool).chmod(0o755)
    text = (
        "all:\n"
        "  vars:\n"
        "    model_size_gb: 100\n"
        "    nic: hsn0\n"
        "  hosts:\n"
        "    node1:\n"
        "      ansible_host: 127.0.0.201\n"
        "      ansible_port: 1\n"
        "    node2:\n"
        "      ansible_host: 127.0.0.202\n"
        "      ansible_port: 1\n"
        "      connector: slurm\n"
    )
    inventory = tmp_path / "mixed.yaml"
    inventory.write_text(text)
    proc = subprocess.run(
        [INVOKE, "launch", "--tp", "8", "--nnodes", "2", "--hosts", str(inventory)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"},
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{inventory.name}:12: key 'connector'" in proc.stderr, proc.stderr
    assert f"node2 uses slurm ({inventory}:12)" in proc.stderr
    assert "node1 uses ssh (the default)" in proc.stderr
    assert not calls.exists(), calls.read_text()
