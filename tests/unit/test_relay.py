"""The relay's pure plan and the node script's check/hash modes, run here for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from relay_local import LocalSession

from xpufleet.errors import InputError, TransferFailed
from xpufleet.host import Host
from xpufleet.lab.model import break_model, write_model
from xpufleet.relay import (
    NODE_SCRIPT,
    Member,
    RelayResult,
    StreamFile,
    file_hash,
    parents_of,
    plan_tree,
    run_relay,
)
from xpufleet.relay.batch import FileRelay
from xpufleet.stage import local_manifest, parse_source, place_of


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


def test_records_of_another_hash_count_as_none_and_are_replaced(tmp_path: Path) -> None:
    """A node staged by an older xpufleet (blake2b-256 records): hashed once with sha256,
    recorded, then stat only again; nothing is sent for files that match."""
    source = write_model(tmp_path / "src", shards=2, shard_bytes=4096)
    files = local_manifest(str(source))["files"]
    shard = next(n for n in files if n.endswith(".safetensors"))
    assert files[shard]["hash"] == file_hash(source / shard)
    target = write_model(tmp_path / "dst", shards=2, shard_bytes=4096)
    node_script("check", {"dir": str(target), "files": files})
    manifest = target / ".xpufleet-manifest.json"
    doc = json.loads(manifest.read_text())
    assert doc["hash"] == "sha256"
    doc["hash"] = "blake2b-256"
    manifest.write_text(json.dumps(doc))
    old = node_script("check", {"dir": str(target), "files": files})
    assert old["need"] == [] and sorted(old["hashed"]) == sorted(files)
    assert json.loads(manifest.read_text())["hash"] == "sha256"
    assert node_script("check", {"dir": str(target), "files": files})["hashed"] == []


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


def blob(tmp_path: Path, size: int) -> tuple[Path, StreamFile]:
    path = tmp_path / "w-1.0-py3-none-any.whl"
    path.write_bytes(os.urandom(size))
    return path, StreamFile(path.name, size, file_hash(path))


def members(tmp_path: Path, sessions: list[LocalSession], name: str) -> list[Member]:
    return [
        Member(s, str(tmp_path / s.host.name), [name], "stdin" if i == 0 else "socket")  # type: ignore[arg-type]
        for i, s in enumerate(sessions)
    ]


@pytest.mark.parametrize("full", ["n1", "n2"])  # the head, a node in the middle
def test_a_node_that_cannot_write_says_why_and_keeps_forwarding(tmp_path: Path, full: str) -> None:
    path, item = blob(tmp_path, 3 << 20)
    sessions = [LocalSession(n, fsize=(1 << 20) if n == full else None) for n in ("n1", "n2", "n3")]
    result = run_relay(members(tmp_path, sessions, item.name), [item], {}, source={item.name: path})
    bad = result.nodes[full]
    assert "writing" in bad.write_errors[item.name] and item.name in bad.write_errors[item.name]
    assert bad.done and not (tmp_path / full / item.name).exists()
    assert [p.name for p in (tmp_path / full).iterdir() if p.name.endswith("part")] == []
    for other in {"n1", "n2", "n3"} - {full}:
        assert result.nodes[other].received == [item.name], result.nodes[other]
        assert (tmp_path / other / item.name).read_bytes() == path.read_bytes()
    assert result.control_bytes == item.size


def relay_killing(
    tmp_path: Path, victim: int, after: int, **options: Any
) -> tuple[RelayResult, list[LocalSession], Path, StreamFile]:
    """n1 -> n2 -> n3 relay an 8 MiB file; `victim` (an index) is killed once the control
    node has sent `after` bytes."""
    path, item = blob(tmp_path, 8 << 20)
    sessions = [LocalSession(n) for n in ("n1", "n2", "n3")]

    def on_sent(sent: int) -> None:
        if sent >= after:
            sessions[victim].kill()

    chain = members(tmp_path, sessions, item.name)
    result = run_relay(chain, [item], {}, source={item.name: path}, on_sent=on_sent, **options)
    return result, sessions, path, item


def test_a_node_not_listening_in_time_is_stopped_and_gone_around(tmp_path: Path) -> None:
    """A node whose relay script starts after the listen timeout (a loaded node) would get
    no topology and wait for one forever, and the relay with it: it is stopped (to be run
    again), and its child is fed by the node before it."""
    path, item = blob(tmp_path, 1 << 20)
    sessions = [LocalSession("n1"), LocalSession("n2", delay=3), LocalSession("n3")]
    chain = members(tmp_path, sessions, item.name)
    result = run_relay(chain, [item], {}, source={item.name: path}, listen_timeout=1)
    assert result.stopped == ["n2"], result.nodes
    assert "not listening after 1 s" in str(result.nodes["n2"].error)
    for name in ("n1", "n3"):
        assert (tmp_path / name / item.name).read_bytes() == path.read_bytes()
    for channel in sessions[1].channels:
        assert channel.exit_status(30) is not None  # it ended, nothing waits on it


@pytest.mark.timeout(120)
def test_a_stalled_relay_is_stopped_not_waited_on_forever(tmp_path: Path) -> None:
    """The head waits for bytes the control node will never send (here: the file is 10
    bytes shorter than announced): no node says anything more, so after `stall_timeout`
    every unfinished node is stopped (to be run again) and every node process ends."""
    path, item = blob(tmp_path, 1 << 20)
    short = StreamFile(item.name, item.size + 10, item.hash)
    sessions = [LocalSession(n) for n in ("n1", "n2", "n3")]
    chain = members(tmp_path, sessions, item.name)
    result = run_relay(chain, [short], {}, source={item.name: path}, stall_timeout=2)
    assert sorted(result.stopped) == ["n1", "n2", "n3"], result.nodes
    assert "no word from any node for 2 s" in str(result.nodes["n1"].error)
    for channel in (c for s in sessions for c in s.channels):
        assert channel.exit_status(30) is not None  # nothing left running


def test_the_head_dying_stops_the_others_at_once(tmp_path: Path) -> None:
    """Nobody can adopt the head's children: the control node stops them (no waiting on
    `parent_timeout`), marked `stopped`, so the caller can run them again."""
    result, sessions, _, _ = relay_killing(tmp_path, 0, 2 << 20, parent_timeout=30)
    assert not result.nodes["n1"].stopped and not result.nodes["n1"].done
    assert result.stopped == ["n2", "n3"]
    assert "the relay's head n1 failed" in str(result.nodes["n3"].error)
    for channel in (c for s in sessions for c in s.channels):
        assert channel.exit_status(60) is not None  # nothing left running


def test_a_node_killed_mid_stream_is_gone_around_and_its_child_gets_every_byte(
    tmp_path: Path,
) -> None:
    result, _, path, item = relay_killing(tmp_path, 1, 3 << 20)
    assert result.nodes["n1"].lost == ["n2"] and not result.nodes["n2"].done
    assert result.nodes["n3"].fed_by == "n1" and result.nodes["n3"].received == [item.name]
    assert (tmp_path / "n3" / item.name).read_bytes() == path.read_bytes()
    assert result.control_bytes == item.size


def test_file_relay_fails_the_full_node_with_its_cause_and_sends_one_copy(tmp_path: Path) -> None:
    path, item = blob(tmp_path, 3 << 20)
    relay = FileRelay(3, window=30)
    outcome: dict[str, object] = {}
    fallbacks: list[str] = []

    def push(session: LocalSession) -> None:
        def direct() -> int:
            fallbacks.append(session.host.name)
            return 0

        try:
            where = str(tmp_path / session.host.name)
            outcome[session.host.name] = relay.push(session, [(path, item.name)], where, direct)  # type: ignore[arg-type]
        except TransferFailed as exc:
            outcome[session.host.name] = exc

    sessions = [LocalSession(n, fsize=(1 << 20) if n == "n2" else None) for n in ("n1", "n2", "n3")]
    threads = [threading.Thread(target=push, args=(s,)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert isinstance(outcome["n2"], TransferFailed) and "writing" in outcome["n2"].message
    sent = [v[0] for n, v in outcome.items() if n != "n2"]  # type: ignore[index]
    assert sorted(sent) in ([0, item.size], [0, 0])  # one copy (the leader may be n2)
    assert fallbacks == []
    for name in ("n1", "n3"):
        assert (tmp_path / name / item.name).read_bytes() == path.read_bytes()


def test_staging_place_is_doctors_storage_key_so_a_shared_directory_is_staged_once() -> None:
    nfs = {"fstype": "nfs4", "source": "nfs0:/export/models", "root": "/", "point": "/models"}
    ext4 = {"fstype": "ext4", "source": "/dev/sda1", "root": "/", "point": "/"}

    def answer(mount: dict, dev: int, ino: int, below: str = ".") -> dict:
        return {"mount": mount, "dev": dev, "ino": ino, "below": below}

    # NFS: each client numbers the device its own way; the export and inode are the same
    assert place_of(answer(nfs, 51, 1234)) == place_of(answer(nfs, 77, 1234)) is not None
    other = dict(nfs, source="nfs1:/export/models")
    assert place_of(answer(nfs, 51, 1234)) != place_of(answer(other, 51, 1234))
    # not created yet: the same shared parent and the same path below it
    assert place_of(answer(nfs, 51, 99, "R1")) == place_of(answer(nfs, 52, 99, "R1"))
    assert place_of(answer(nfs, 51, 99, "R1")) != place_of(answer(nfs, 51, 99, "R2"))
    # local disks: one directory only when the device and the inode are the same
    assert place_of(answer(ext4, 2049, 10)) != place_of(answer(ext4, 2049, 11))
    assert place_of({"dev": 1, "ino": 2}) is None


def test_a_batch_waits_for_hosts_still_working_and_not_for_those_that_left(
    tmp_path: Path,
) -> None:
    """Three hosts arrive; one leaves (its provision failed) and one asks for the file a
    moment after the first: ONE relay carries it to both askers (the window is long: a
    leader waiting for the host that left would still be waiting at the join below)."""
    import time

    source = tmp_path / "w.whl"
    source.write_bytes(os.urandom(100_000))
    relay = FileRelay(3, window=600.0)
    for _ in range(3):
        relay.arrive()
    outcomes: dict[str, tuple[int, str]] = {}

    def one(name: str, delay: float) -> None:
        time.sleep(delay)  # arrives later than the leader, not a timing assertion
        session = LocalSession(name)
        outcomes[name] = relay.push(  # type: ignore[arg-type]
            session, [(source, "w.whl")], str(tmp_path / name), lambda: pytest.fail("fallback")
        )
        relay.leave()

    threads = [threading.Thread(target=one, args=a) for a in (("n1", 0.0), ("n2", 0.5))]
    for thread in threads:
        thread.start()
    relay.leave()  # the third host failed before its wheel step
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "the batch waited for a host that left"
    assert sum(sent for sent, _ in outcomes.values()) == 100_000
    assert all("2 node(s)" in how for _, how in outcomes.values()), outcomes
