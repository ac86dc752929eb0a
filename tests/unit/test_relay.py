"""The relay's pure plan and the node script's check/hash modes, run here for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from xpufleet.errors import InputError
from xpufleet.host import Host
from xpufleet.lab.model import break_model, write_model
from xpufleet.relay import NODE_SCRIPT, parents_of, plan_tree
from xpufleet.stage import local_manifest, parse_source


def test_chain_and_tree_plans() -> None:
    names = [f"n{i}" for i in range(1, 8)]
    chain = plan_tree(names, 1)
    assert chain["n1"] == ["n2"] and chain["n6"] == ["n7"] and chain["n7"] == []
    tree = plan_tree(names, 2)
    assert tree["n1"] == ["n2", "n3"] and tree["n2"] == ["n4", "n5"] and tree["n3"] == ["n6", "n7"]
    assert parents_of(tree)["n7"] == "n3"
    assert plan_tree(["solo"], 4) == {"solo": []}


def node_script(mode: str, config: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", NODE_SCRIPT, mode],
        input=json.dumps(config) + "\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.splitlines()[-1])


def test_check_trusts_records_by_stat_and_hashes_what_it_does_not_know(tmp_path: Path) -> None:
    source = write_model(tmp_path / "src", shards=3, shard_bytes=8192)
    files = local_manifest(str(source))["files"]
    target = write_model(tmp_path / "dst", shards=3, shard_bytes=8192)
    first = node_script("check", {"dir": str(target), "files": files})
    assert first["need"] == [] and len(first["hashed"]) == len(files)
    again = node_script("check", {"dir": str(target), "files": files})
    assert again["hashed"] == [] and again["need"] == []
    shard = break_model(target, "model_other_shard")
    changed = node_script("check", {"dir": str(target), "files": files})
    assert changed["need"] == [shard] and changed["hashed"] == [shard]
    os.unlink(target / "config.json")
    assert "config.json" in node_script("check", {"dir": str(target), "files": files})["need"]


def test_source_parsing_refuses_bad_input(tmp_path: Path) -> None:
    hosts = [Host("node1", "10.0.0.1")]
    assert parse_source("node1:/models/R1", hosts).host is hosts[0]
    assert parse_source(str(tmp_path), hosts).host is None
    with pytest.raises(InputError):
        parse_source("node1:models", hosts)
    with pytest.raises(InputError):
        parse_source(str(tmp_path / "absent"), hosts)
    with pytest.raises(InputError):
        parse_source("", hosts)
