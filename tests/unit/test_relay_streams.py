"""Parallel streams (K relays at once, each with a share of the files): the pure split
and merge, and K=2 relays run here for real (the node script, TCP on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from relay_local import LocalSession

from xpufleet.errors import InputError
from xpufleet.host import Host
from xpufleet.relay import (
    Member,
    NodeOutcome,
    StreamFile,
    chain_members,
    file_hash,
    merge_outcomes,
    run_relays,
    split_files,
)
from xpufleet.stage import streams_for


def item(name: str, size: int) -> StreamFile:
    return StreamFile(name, size, "h-" + name)


def names(share: list[StreamFile]) -> list[str]:
    return [f.name for f in share]


def test_files_split_into_shares_of_about_equal_bytes_biggest_first() -> None:
    files = [item("a", 10), item("b", 70), item("c", 30), item("d", 40), item("e", 0)]
    # one stream: every file in name order, the relay's order
    assert [names(s) for s in split_files(files, 1)] == [["a", "b", "c", "d", "e"]]
    # biggest first, each to the lightest share: b(70) | d(40), c(30) joins d (70 each),
    # a(10) the first of equals, e(0) the lightest
    two = split_files(files, 2)
    assert [names(s) for s in two] == [["a", "b"], ["c", "d", "e"]]
    assert [sum(f.size for f in s) for s in two] == [80, 70]
    # disjoint and complete for any K; more streams than files: no empty share
    for count in (1, 2, 3, 4, 5, 9):
        shares = split_files(files, count)
        flat = [f.name for s in shares for f in s]
        assert sorted(flat) == ["a", "b", "c", "d", "e"] and len(shares) == min(count, 5)
    # 16 equal shards over 4 streams: 4 each
    shards = [item(f"s{i:02d}", 100) for i in range(16)]
    assert [len(s) for s in split_files(shards, 4)] == [4, 4, 4, 4]
    assert split_files([], 3) == [[]]


def test_each_stream_takes_the_members_that_want_its_files() -> None:
    def member(name: str, want: list[str], upstream: str = "socket") -> Member:
        return Member(LocalSession(name), "/d", want, upstream)  # type: ignore[arg-type]

    chain = [member("n1", ["a"], "stdin"), member("n2", ["a", "b"]), member("n3", ["b"])]
    only_b = chain_members(chain, {"b"})
    assert [(m.name, m.want, m.upstream) for m in only_b] == [
        ("n2", ["b"], "stdin"),  # the first left is fed by the control node
        ("n3", ["b"], "socket"),
    ]
    assert [m.name for m in chain_members(chain, {"a", "b"})] == ["n1", "n2", "n3"]
    source = [member("src", [], "disk"), member("n2", ["a"])]
    assert [(m.name, m.upstream) for m in chain_members(source, {"a"})] == [
        ("src", "disk"),  # the source node reads its own disk: always the head
        ("n2", "socket"),
    ]
    assert chain_members(chain, {"z"}) == []


def test_a_nodes_outcome_over_its_streams() -> None:
    ok = NodeOutcome("n2", received=["a"], written=5, done=True, fed_by="n1")
    other = NodeOutcome("n2", received=["b"], written=7, done=True, fed_by="n1")
    both = merge_outcomes("n2", [ok, other])
    assert both.done and both.received == ["a", "b"] and both.written == 12
    assert both.fed_by == "n1" and both.error is None and not both.stopped
    # stopped in one stream (its head died), killed in the other: its own failure
    stopped = NodeOutcome("n2", error="stopped: head", stopped=True)
    killed = NodeOutcome("n2", error="its relay process died (killed)")
    merged = merge_outcomes("n2", [ok, stopped, killed])
    assert not merged.done and not merged.stopped and "killed" in str(merged.error)
    only_stopped = merge_outcomes("n2", [ok, stopped])
    assert not only_stopped.done and only_stopped.stopped  # run it again
    adopted = NodeOutcome("n3", done=True, fed_by="n1", lost=["n2"])
    assert merge_outcomes("n3", [ok, adopted]).fed_by == "n1"
    assert merge_outcomes("n3", [other, replace_fed(adopted, "n2")]).fed_by == "n1, n2"


def replace_fed(outcome: NodeOutcome, fed_by: str) -> NodeOutcome:
    outcome.fed_by = fed_by
    return outcome


def test_streams_come_from_the_cli_or_the_weakest_host() -> None:
    hosts = [Host("a", "10.0.0.1", vars={"stage_streams": 4}), Host("b", "10.0.0.2")]
    assert streams_for(hosts, None) == 1  # b keeps the default
    assert streams_for(hosts[:1], None) == 4
    assert streams_for(hosts, 3) == 3
    for bad in (0, 9):
        with pytest.raises(InputError):
            streams_for(hosts, bad)


def model_dir(tmp_path: Path) -> tuple[Path, list[StreamFile]]:
    source = tmp_path / "src"
    source.mkdir()
    for i, size in enumerate((3 << 20, 1 << 20, 2 << 20, 5000, 0)):
        (source / f"f{i}.bin").write_bytes(os.urandom(size))
    files = [StreamFile(p.name, p.stat().st_size, file_hash(p)) for p in sorted(source.iterdir())]
    return source, files


def chain_of(tmp_path: Path, sessions: list[LocalSession], files: list[StreamFile]) -> list[Member]:
    wanted = [f.name for f in files]
    return [
        Member(s, str(tmp_path / s.host.name), wanted, "stdin" if i == 0 else "socket")  # type: ignore[arg-type]
        for i, s in enumerate(sessions)
    ]


def test_two_streams_bring_every_file_to_every_node_each_byte_sent_once(tmp_path: Path) -> None:
    source, files = model_dir(tmp_path)
    sessions = [LocalSession(n) for n in ("n1", "n2", "n3")]
    members = chain_of(tmp_path, sessions, files)
    manifest = {"files": {f.name: {"size": f.size, "hash": f.hash} for f in files}}
    # a part a cut transfer left: removed by the stream that carries that file only
    (tmp_path / "n2").mkdir()
    (tmp_path / "n2" / ".f0.bin.xpufleet-part").write_bytes(b"cut")
    progress: dict[str, int] = {}
    sent: list[int] = []
    result = run_relays(
        members,
        files,
        manifest,
        streams=2,
        source=source,
        on_progress=lambda host, written: progress.__setitem__(host, written),
        on_sent=sent.append,
    )
    total = sum(f.size for f in files)
    assert len(result.chains) == 2 and result.failed == []
    shares = [set(c.files) for c in result.chains]
    assert shares[0].isdisjoint(shares[1]) and shares[0] | shares[1] == {f.name for f in files}
    assert result.control_bytes == total == result.stream_bytes == sent[-1]
    assert result.tree == {"n1": ["n2"], "n2": ["n3"], "n3": []}
    for name in ("n1", "n2", "n3"):
        node = tmp_path / name
        assert sorted(result.nodes[name].received) == sorted(f.name for f in files)
        assert progress[name] == result.nodes[name].written == total
        for f in files:
            assert file_hash(node / f.name) == f.hash
        assert [p.name for p in node.iterdir() if p.name.endswith("part")] == []
        # both streams recorded their files in the one manifest (no update lost)
        recorded = json.loads((node / ".xpufleet-manifest.json").read_text())["files"]
        assert sorted(recorded) == sorted(f.name for f in files)


def test_a_node_killed_mid_stream_is_gone_around_in_every_stream(tmp_path: Path) -> None:
    source, files = model_dir(tmp_path)
    sessions = [LocalSession(n) for n in ("n1", "n2", "n3")]
    members = chain_of(tmp_path, sessions, files)
    killed: list[int] = []
    links: list[str] = []
    linked = threading.Event()

    def on_event(name: str, event: dict[str, Any]) -> None:
        if event.get("event") == "link":
            links.append(name)
            if len(links) == 4:  # n1 -> n2 -> n3 in both streams: both are flowing
                linked.set()

    def on_sent(sent: int) -> None:
        if not killed and sent >= 2 << 20:
            assert linked.wait(60)
            sessions[1].kill()  # every channel of n2: both streams
            killed.append(sent)

    result = run_relays(
        members, files, {}, streams=2, source=source, on_sent=on_sent, on_event=on_event
    )
    assert killed, result.nodes
    assert not result.nodes["n2"].done and not result.nodes["n2"].stopped
    assert "killed" in str(result.nodes["n2"].error)
    assert result.nodes["n1"].lost == ["n2"] and result.nodes["n3"].fed_by == "n1"
    assert result.control_bytes == sum(f.size for f in files)
    for f in files:
        assert file_hash(tmp_path / "n3" / f.name) == f.hash, result.nodes["n3"]


class Cut(Exception):
    pass


def test_a_stream_cut_stops_every_stream_and_the_error_comes_through(tmp_path: Path) -> None:
    """The control node stops feeding one stream (an error, Ctrl-C): the other streams'
    nodes are stopped too, nothing is left running, the error reaches the caller."""
    source, files = model_dir(tmp_path)
    sessions = [LocalSession(n) for n in ("n1", "n2", "n3")]

    def on_sent(sent: int) -> None:
        if sent >= 1 << 20:
            raise Cut("the control node stops here")

    with pytest.raises(Cut):
        run_relays(chain_of(tmp_path, sessions, files), files, {}, streams=2, source=source,
                   on_sent=on_sent)  # fmt: skip
    channels = [c for s in sessions for c in s.channels]
    assert len(channels) == 6
    for channel in channels:
        assert channel.exit_status(30) is not None  # nothing left running
