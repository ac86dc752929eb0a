"""The relay: the source sends each byte once; nodes forward what they receive while
writing it (a pipelined chain, or a tree with `fanout` children per node).

Control side of `relay/node.py`. One SSH channel per node runs the node script; the
nodes link to each other over TCP on their own addresses (ports chosen by the nodes,
a random token per run). The control node feeds the head over its channel when the
source is a local directory, or the head reads its own disk when the source is a node.
A node that fails is named (its channel ends without `done`); its parent adopts its
children and replays what they lack from its own disk (see node.py). A node that cannot
write (disk full) says so at once and keeps forwarding. The control node never waits on
a dead hop: when the head dies nobody can adopt its children, so every node still
running is stopped at once (their channels closed); a node its parent gave up on is
stopped too (nobody else will feed it). Stopped nodes are `stopped`: the caller may run
them again (a new relay), they did not fail on their own.

`run_relays` runs `streams` such relays at once over the same nodes, each carrying a
disjoint share of the files (`split_files`, by size): K streams per node, each file
still sent once. One stream is one relay.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import shell
from ..errors import HostError
from ..transport import CHUNK, Channel, Session

NODE_SCRIPT = (Path(__file__).resolve().parent / "node.py").read_text()
#: how long a node waits for a (new) parent before it gives up
PARENT_TIMEOUT_S = 120.0
#: how long the nodes' relay scripts get to start and listen (a loaded node is slow)
LISTEN_TIMEOUT_S = 120.0
#: no event from any node and no byte sent for this long: the relay is stuck, its
#: unfinished nodes are stopped (run again by the caller's next round). Longer than any
#: wait a node reports on its own (`parent_timeout`, its 60 s of connect retries).
STALL_TIMEOUT_S = PARENT_TIMEOUT_S + 60.0
#: a node its parent gave up on that is still running after this is stopped (a dead one
#: has ended by then, so its own cause is what gets reported)
ORPHAN_GRACE_S = 2.0


def file_hash(path: Path) -> str:
    """The relay's hash (facts/weights.py HASH_NAME, node.py `hash_file`) of a file here."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def node_command(mode: str, python: str = "python3") -> str:
    """The remote command running the node script in `mode` (source travels in argv)."""
    return shell.join([python, "-c", NODE_SCRIPT, mode])


def run_node_script(
    session: Session, mode: str, config: Mapping[str, Any], timeout: float | None = None
) -> dict[str, Any]:
    """One round trip: `check` or `hash` on a node -> its last JSON event."""
    out = session.run(node_command(mode), stdin=json.dumps(config) + "\n", timeout=timeout)
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if not events or events[-1].get("event") == "error":
        message = events[-1].get("message") if events else out.stderr.strip()[-300:]
        raise HostError(session.host.name, f"relay {mode} failed: {message}")
    return events[-1]


@dataclass(frozen=True)
class StreamFile:
    name: str
    size: int
    hash: str


@dataclass
class Member:
    """One node of the relay: where it writes, what it wants, where its bytes come from."""

    session: Session
    directory: str
    want: list[str]
    #: "stdin" (fed by the control node), "disk" (the source node), "socket" (a parent)
    upstream: str = "socket"
    source_dir: str | None = None

    @property
    def name(self) -> str:
        return self.session.host.name


def plan_tree(names: Sequence[str], fanout: int) -> dict[str, list[str]]:
    """Children of each node: node i's parent is node (i-1)//fanout (fanout 1 = a chain)."""
    fanout = max(1, int(fanout))
    children: dict[str, list[str]] = {name: [] for name in names}
    for index in range(1, len(names)):
        children[names[(index - 1) // fanout]].append(names[index])
    return children


def parents_of(tree: Mapping[str, list[str]]) -> dict[str, str]:
    return {child: parent for parent, kids in tree.items() for child in kids}


@dataclass
class NodeOutcome:
    name: str
    received: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)
    written: int = 0
    done: bool = False
    error: str | None = None
    #: children this node found dead, and the node that really fed it
    lost: list[str] = field(default_factory=list)
    fed_by: str | None = None
    replayed: int = 0
    #: file -> the node's own error writing it (disk full, permissions)
    write_errors: dict[str, str] = field(default_factory=dict)
    #: the control node stopped it while it ran (its upstream was gone): not its fault
    stopped: bool = False


@dataclass
class RelayResult:
    tree: dict[str, list[str]]
    nodes: dict[str, NodeOutcome]
    control_bytes: int = 0
    stream_bytes: int = 0
    seconds: float = 0.0
    #: the files this relay carried (run_relay), or each stream's relay (run_relays)
    files: list[str] = field(default_factory=list)
    chains: list[RelayResult] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [n for n, o in self.nodes.items() if not o.done or o.bad]

    @property
    def stopped(self) -> list[str]:
        """Nodes the relay did not reach through no fault of their own: run them again."""
        return [n for n, o in self.nodes.items() if not o.done and o.stopped]


#: progress(host, bytes written so far by that node)
Progress = Callable[[str, int], None]


def run_relay(
    members: Sequence[Member],
    files: Sequence[StreamFile],
    manifest: Mapping[str, Any],
    *,
    fanout: int = 1,
    source: Path | Mapping[str, Path] | None = None,
    on_progress: Progress | None = None,
    on_sent: Callable[[int], None] | None = None,
    parent_timeout: float = PARENT_TIMEOUT_S,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    on_channel: Callable[[Channel], None] | None = None,
    listen_timeout: float = LISTEN_TIMEOUT_S,
    stall_timeout: float = STALL_TIMEOUT_S,
) -> RelayResult:
    """Run one relay over `members` (the first is the head) and wait for every node.
    `on_channel` sees each node's channel as it opens (closing one stops that node)."""
    began = time.monotonic()
    names = [m.name for m in members]
    tree = plan_tree(names, fanout)
    token = secrets.token_hex(16)
    stream = [{"name": f.name, "size": f.size, "hash": f.hash} for f in files]
    outcomes = {n: NodeOutcome(n) for n in names}
    result = RelayResult(
        tree, outcomes, stream_bytes=sum(f.size for f in files), files=[f.name for f in files]
    )
    for child, parent in parents_of(tree).items():
        outcomes[child].fed_by = parent
    channels: dict[str, Channel] = {}
    listening: dict[str, tuple[str, int]] = {}
    ready = threading.Condition()
    readers: list[threading.Thread] = []
    aborted: list[str] = []
    last_word = [time.monotonic()]  # the last event from a node or byte sent

    def sent(count: int) -> None:
        last_word[0] = time.monotonic()
        if on_sent:
            on_sent(count)

    def read_events(member: Member, channel: Channel) -> None:
        outcome = outcomes[member.name]
        try:
            for line in channel.lines():
                last_word[0] = time.monotonic()
                if not line.startswith("{"):
                    continue
                event = json.loads(line)
                kind = event.get("event")
                if on_event:
                    on_event(member.name, event)
                if kind == "listen":
                    with ready:
                        listening[member.name] = (member.session.host.address, event["port"])
                        ready.notify_all()
                elif kind == "progress" and on_progress:
                    on_progress(member.name, int(event.get("written", 0)))
                elif kind == "file":
                    outcome.received.append(event["name"])
                elif kind == "bad":
                    outcome.bad.append(event["name"])
                    if event.get("write_error"):
                        outcome.write_errors[event["name"]] = str(event.get("reason"))
                elif kind == "lost":
                    outcome.lost.append(event["child"])
                    why = f"{member.name} could not feed it: {event.get('reason')}"
                    timer = threading.Timer(ORPHAN_GRACE_S, stop, (event["child"], why))
                    timer.daemon = True
                    timer.start()
                elif kind == "link" and event["child"] in outcomes:
                    outcomes[event["child"]].fed_by = member.name
                    outcome.replayed += int(event.get("replayed", 0))
                elif kind == "done":
                    outcome.written = int(event.get("written", 0))
                    outcome.done = True
                    if on_progress:
                        on_progress(member.name, outcome.written)
                elif kind == "error" and not outcome.stopped:  # stopped: say why we did
                    outcome.error = str(event.get("message"))
        except HostError as exc:
            outcome.error = outcome.error or exc.message
        status = channel.exit_status(timeout=5)
        if not outcome.done and outcome.error is None:
            tail = channel.stderr.decode(errors="replace").strip().splitlines()
            killed = status is None or status < 0  # a signal: sshd sends no exit status
            why = "its relay process died (killed)" if killed else f"exit {status}"
            outcome.error = why + (f": {tail[-1][:200]}" if tail else "")
        if not outcome.done and outcome.fed_by is None:
            # the head is gone: nobody can adopt its children, stop them now
            aborted.append(f"the relay's head {member.name} failed ({outcome.error})")
            for name in names:
                stop(name, aborted[0])
        with ready:
            ready.notify_all()

    def stop(name: str, why: str) -> None:
        """Close a running node's channel (it exits at once: see exit_on_eof)."""
        with ready:
            outcome = outcomes[name]
            if outcome.done or outcome.error is not None or name not in channels:
                return
            outcome.error = f"stopped: {why}"
            outcome.stopped = True
        channels[name].close()

    try:
        for member in members:
            config = {
                "name": member.name,
                "dir": member.directory,
                "files": stream,
                "want": member.want,
                "upstream": member.upstream,
                "source_dir": member.source_dir,
                "token": token,
                "listen": member.session.host.address,
                "bind": member.session.host.address,
                "parent_timeout": parent_timeout,
                "manifest": manifest,
            }
            if not hasattr(member.session, "open_channel"):
                outcomes[member.name].error = "the relay needs an SSH connection (not srun)"
                continue
            try:
                channel = member.session.open_channel(
                    node_command("relay"), bulk=member.upstream == "stdin"
                )
                channel.send((json.dumps(config) + "\n").encode())
            except HostError as exc:
                outcomes[member.name].error = exc.message
                continue
            channels[member.name] = channel
            if on_channel:
                on_channel(channel)
            thread = threading.Thread(target=read_events, args=(member, channel), daemon=True)
            thread.start()
            readers.append(thread)
        if names and outcomes[names[0]].error is not None and names[0] not in channels:
            aborted.append(f"the relay's head {names[0]} failed ({outcomes[names[0]].error})")
        for name in names if aborted else ():
            stop(name, aborted[0])  # the head died while the others were starting
        deadline = time.monotonic() + listen_timeout
        with ready:
            while any(
                n not in listening and outcomes[n].error is None and n in channels for n in names
            ):
                if not ready.wait(timeout=max(0.1, deadline - time.monotonic())):
                    break
        # a node that was not listening in time gets no topology: it would wait for one
        # forever (and this relay on it); it is stopped, and the others go around it
        for name in names:
            if name in channels and name not in listening:
                stop(name, f"its relay was not listening after {listen_timeout:g} s")
        endpoints = {n: list(listening[n]) for n in listening}
        topology = json.dumps({"tree": tree, "endpoints": endpoints}) + "\n"
        for name, channel in channels.items():
            if name in listening:
                try:
                    channel.send(topology.encode())
                except HostError as exc:
                    outcomes[name].error = exc.message
        head = members[0] if members else None
        if head is not None and head.upstream == "stdin" and head.name in channels:
            assert source is not None
            result.control_bytes = _feed(channels[head.name], source, files, sent)
        for thread in readers:
            while thread.is_alive():
                thread.join(timeout=1.0)
                silent = time.monotonic() - last_word[0]
                if thread.is_alive() and silent > stall_timeout:
                    # a node waiting for bytes nobody will send (seen: a head reading
                    # stdin after the control node's last byte) would hold this forever
                    for name in names:
                        stop(name, f"no word from any node for {stall_timeout:g} s")
                    for channel in channels.values():  # a finished node's too
                        channel.close()
                    last_word[0] = time.monotonic()  # give them time to exit
    finally:
        for channel in channels.values():
            channel.close()
    result.seconds = time.monotonic() - began
    return result


def split_files(files: Sequence[StreamFile], streams: int) -> list[list[StreamFile]]:
    """`files` as `streams` disjoint shares of about equal bytes (pure): biggest first,
    each to the share with the fewest bytes so far (ties: the first); each share in name
    order, empty shares dropped. One stream: every file, in name order."""
    count = max(1, int(streams))
    shares: list[list[StreamFile]] = [[] for _ in range(count)]
    loads = [0] * count
    for item in sorted(files, key=lambda f: (-f.size, f.name)):
        least = min(range(count), key=lambda k: (loads[k], k))
        shares[least].append(item)
        loads[least] += item.size
    return [sorted(share, key=lambda f: f.name) for share in shares if share] or [[]]


def chain_members(members: Sequence[Member], names: set[str]) -> list[Member]:
    """The members of the relay carrying `names` (pure): those that want any of them,
    each wanting only those; the head stays when it is the source (it reads its disk),
    else the first member left takes its upstream."""
    head = members[0].upstream if members else "socket"
    kept = [
        m
        for i, m in enumerate(members)
        if (i == 0 and m.upstream == "disk") or names.intersection(m.want)
    ]
    return [
        replace(m, want=[w for w in m.want if w in names], upstream=head if i == 0 else "socket")
        for i, m in enumerate(kept)
    ]


def merge_outcomes(name: str, parts: Sequence[NodeOutcome]) -> NodeOutcome:
    """One node's outcome over the streams it took part in (pure): done when done in
    every one; `stopped` when every stream it did not finish stopped it; its own error
    first."""
    unfinished = [o for o in parts if not o.done]
    errors = [o.error for o in unfinished if o.error and not o.stopped]
    errors += [o.error for o in unfinished if o.error and o.stopped]
    feeders = [o.fed_by for o in parts if o.fed_by]
    return NodeOutcome(
        name,
        received=[f for o in parts for f in o.received],
        bad=[f for o in parts for f in o.bad],
        written=sum(o.written for o in parts),
        done=not unfinished,
        error=errors[0] if errors else None,
        lost=list(dict.fromkeys(c for o in parts for c in o.lost)),
        fed_by=", ".join(dict.fromkeys(feeders)) or None,
        replayed=sum(o.replayed for o in parts),
        write_errors={k: v for o in parts for k, v in o.write_errors.items()},
        stopped=bool(unfinished) and all(o.stopped for o in unfinished),
    )


def run_relays(
    members: Sequence[Member],
    files: Sequence[StreamFile],
    manifest: Mapping[str, Any],
    *,
    streams: int = 1,
    fanout: int = 1,
    source: Path | Mapping[str, Path] | None = None,
    on_progress: Progress | None = None,
    on_sent: Callable[[int], None] | None = None,
    parent_timeout: float = PARENT_TIMEOUT_S,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> RelayResult:
    """`streams` relays at once (one thread each), each over the members that want its
    share of `files` (split_files, chain_members): every file is still sent once, every
    node writes K files at a time. The result merges the streams (each node's outcome:
    merge_outcomes; bytes summed; `tree` the plan over every member) and keeps each in
    `chains`. Progress is summed over the streams: per node, and the control node's
    bytes. One stream fails or is interrupted: every other stream's channels are closed
    (its nodes stop) and the error is raised once all have ended."""
    began = time.monotonic()
    lock = threading.Lock()
    sending = threading.Lock()  # on_sent one at a time (apart: it may wait on events)
    written: dict[tuple[int, str], int] = {}
    sent: dict[int, int] = {}
    channels: list[Channel] = []
    chains: list[RelayResult | None] = []
    raised: list[BaseException] = []

    def stop_all() -> None:
        with lock:
            opened = list(channels)
        for channel in opened:
            with contextlib.suppress(Exception):
                channel.close()

    def run(index: int, chain: list[Member], share: list[StreamFile]) -> None:
        def progress(host: str, value: int) -> None:
            with lock:
                written[index, host] = value
                total = sum(v for (_, h), v in written.items() if h == host)
                if on_progress:
                    on_progress(host, total)

        def fed(value: int) -> None:
            with sending:
                sent[index] = value
                if on_sent:
                    on_sent(sum(sent.values()))

        def opened(channel: Channel) -> None:
            with lock:
                channels.append(channel)
                late = bool(raised)
            if late:
                channel.close()

        try:
            chains[index] = run_relay(
                chain,
                share,
                manifest,
                fanout=fanout,
                source=source,
                on_progress=progress,
                on_sent=fed,
                parent_timeout=parent_timeout,
                on_event=on_event,
                on_channel=opened,
            )
        except BaseException as exc:  # re-raised in the caller's thread
            with lock:
                raised.append(exc)
            stop_all()

    plan = []
    for share in split_files(files, streams):
        chain = chain_members(members, {f.name for f in share})
        if chain:
            plan.append((chain, share))
    chains.extend([None] * len(plan))
    threads = [
        threading.Thread(target=run, args=(i, chain, share), daemon=True)
        for i, (chain, share) in enumerate(plan)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:  # Ctrl-C while waiting: stop every node, then let it through
        with lock:
            raised.append(KeyboardInterrupt())
        stop_all()
        for thread in threads:
            thread.join(timeout=30)
        raise
    if raised:
        raise raised[0]
    done = [c for c in chains if c is not None]
    names = list(dict.fromkeys(m.name for m in members))
    parts: dict[str, list[NodeOutcome]] = {n: [] for n in names}
    for chain_result in done:
        for name, outcome in chain_result.nodes.items():
            parts.setdefault(name, []).append(outcome)
    return RelayResult(
        plan_tree(names, fanout),
        {n: merge_outcomes(n, p) for n, p in parts.items() if p},
        control_bytes=sum(c.control_bytes for c in done),
        stream_bytes=sum(c.stream_bytes for c in done),
        seconds=time.monotonic() - began,
        files=[f for c in done for f in c.files],
        chains=done,
    )


def _feed(
    channel: Channel,
    source: Path | Mapping[str, Path],
    files: Sequence[StreamFile],
    on_sent: Callable[[int], None] | None,
) -> int:
    """Send the stream from the control node (a directory, or a path per file) into the
    head; returns the bytes sent."""
    sent = 0
    try:
        for item in files:
            path = source / item.name if isinstance(source, Path) else source[item.name]
            with path.open("rb") as handle:
                while block := handle.read(CHUNK):
                    channel.send(block)
                    sent += len(block)
                    if on_sent:
                        on_sent(sent)
    except HostError:
        pass  # the head's reader names the failure
    return sent


__all__ = [
    "Member",
    "NodeOutcome",
    "RelayResult",
    "StreamFile",
    "chain_members",
    "file_hash",
    "merge_outcomes",
    "node_command",
    "parents_of",
    "plan_tree",
    "run_node_script",
    "run_relay",
    "run_relays",
    "split_files",
]
