"""`invoke model.stage`: copy a model directory to `model_path` on every selected node.

1. The source manifest (file, size, sha256): computed by the node script's `hash`
   mode on the control node (a local directory) or on the source node (`HOST:PATH`);
   records kept in the source directory are reused while size and mtime hold.
2. One `check` round trip per node: which files it already holds (stat against its own
   manifest; hashed once when it has no record). A node that holds everything is
   `ok` and receives nothing; when every node is, nothing is sent at all.
3. The nodes that lack something take the node lock and form a relay (chain, or tree
   with `fanout`): the source sends each missing file once, every node forwards while
   writing. A node that fails is named; its parent feeds its children. With `streams`
   K > 1, K such relays run at once, each carrying a share of the files (by size).
4. Nodes that did not finish (their upstream died too: the control node stopped them
   at once) get one more round.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import HostError, InputError
from .executor import SessionPool
from .facts.weights import HASH_NAME, INDEX_NAME, Mount, index_shards, storage_key
from .host import Host
from .provision.lock import acquire_lock, release_lock
from .relay import (
    NODE_SCRIPT,
    Member,
    NodeOutcome,
    RelayResult,
    StreamFile,
    run_node_script,
    run_relays,
)
from .results import CHANGED, FAILED, OK, HostReport, Result, TaskReport
from .transport import Session, SSHOptions

STEP = "model.stage"
RUNBOOK = "docs/runbooks/stage.md"
MAX_ROUNDS = 3
#: streams at most: each holds one SSH channel per node (OpenSSH's MaxSessions: 10)
MAX_STREAMS = 8


@dataclass(frozen=True)
class Source:
    """Where the model comes from: a control-node directory or `host:path` on a node."""

    path: str
    host: Host | None = None

    def label(self) -> str:
        return f"{self.host.name}:{self.path}" if self.host else f"control:{self.path}"


def parse_source(text: str, inventory_hosts: Sequence[Host]) -> Source:
    """`DIR` (on the control node) or `HOST:PATH` (HOST a name in the inventory)."""
    if not text:
        raise InputError("--source is required: a directory here or HOST:PATH", key="--source")
    by_name = {h.name: h for h in inventory_hosts}
    name, sep, path = text.partition(":")
    if sep and name in by_name:
        if not path.startswith("/"):
            raise InputError(f"{text}: the path on {name} must be absolute", key="--source")
        return Source(path, by_name[name])
    local = Path(text).expanduser()
    if not local.is_dir():
        raise InputError(
            f"{text}: not a directory on the control node nor HOST:PATH of an inventory host",
            key="--source",
        )
    return Source(str(local.resolve()))


def streams_for(hosts: Sequence[Host], given: int | None) -> int:
    """How many relays stage at once (pure): `--streams` when given, else the smallest
    `stage_streams` of the hosts (every stream passes through every node: the weakest
    node bounds them all)."""
    value = given if given is not None else min((h.var.stage_streams for h in hosts), default=1)
    if not 1 <= int(value) <= MAX_STREAMS:
        raise InputError(
            f"--streams must be 1 to {MAX_STREAMS}, got {value} (each stream is one SSH "
            "channel per node at once, and OpenSSH allows 10 per connection: MaxSessions)",
            key="--streams",
        )
    return int(value)


def local_manifest(directory: str) -> dict[str, Any]:
    """The node script's `hash` mode, run here (one implementation for both sides)."""
    proc = subprocess.run(
        [sys.executable, "-c", NODE_SCRIPT, "hash"],
        input=json.dumps({"dir": directory}) + "\n",
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines or lines[-1].get("event") != "manifest":
        raise InputError(f"cannot read {directory}: {proc.stderr.strip()[-300:]}", key="--source")
    return lines[-1]


def source_problems(files: dict[str, Any]) -> list[str]:
    """A source must itself be complete: the index and every shard it names (pure)."""
    if INDEX_NAME not in files:
        return [f"no {INDEX_NAME}"]
    return []


@dataclass
class NodeCheck:
    have: list[str]
    need: list[str]
    #: nodes with the same place write into one directory (a shared file system)
    place: tuple[Any, ...] | None
    free: int | None


def place_of(event: dict[str, Any]) -> tuple[Any, ...] | None:
    """Where a node's target directory lives, from its `check` answer (pure): the storage
    key doctor's model.same uses (facts/weights.py) of the directory, or of its nearest
    existing parent plus the path below it (not created yet)."""
    mount = event.get("mount")
    if not isinstance(mount, dict):
        return None
    found = Mount(str(mount.get("fstype")), str(mount.get("source")), "", str(mount.get("root")))
    key = storage_key(found, (int(event["dev"]), int(event["ino"])))
    return None if key is None else (key, str(event.get("below") or "."))


def _check(session: Session, directory: str, files: dict[str, Any], verify: bool) -> NodeCheck:
    event = run_node_script(
        session, "check", {"dir": directory, "files": files, "verify": verify}, timeout=None
    )
    return NodeCheck(list(event["have"]), list(event["need"]), place_of(event), event.get("free"))


def stage_model(
    hosts: Sequence[Host],
    options: SSHOptions,
    source: Source,
    *,
    forks: int = 32,
    fanout: int = 1,
    streams: int = 1,
    verify: bool = False,
    on_progress: Callable[[str, int], None] | None = None,
    on_sent: Callable[[int], None] | None = None,
    on_plan: Callable[[dict[str, int]], None] | None = None,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> TaskReport:
    """Stage the model on `hosts`; the report's extra `stage` says what moved where."""
    began = time.monotonic()
    report = TaskReport("model.stage")
    pool_hosts = list(hosts) + ([source.host] if source.host and source.host not in hosts else [])
    with SessionPool(pool_hosts, options, forks) as pool:
        if source.host is None:
            doc = local_manifest(source.path)
        else:
            try:
                doc = run_node_script(pool.session(source.host), "hash", {"dir": source.path})
            except HostError as exc:
                raise InputError(f"source {source.label()}: {exc.message}", key="--source") from exc
        files: dict[str, Any] = doc["files"]
        problems = source_problems(files)
        if problems:
            raise InputError(f"source {source.label()} is incomplete: {'; '.join(problems)}")
        manifest = {"format": 1, "hash": HASH_NAME, "source": source.label(), "files": files}
        total = sum(int(f["size"]) for f in files.values())
        stage: dict[str, Any] = {
            "source": source.label(),
            "files": len(files),
            "bytes": total,
            "hash": HASH_NAME,
            "fanout": fanout,
            "streams": streams,
            "rounds": [],
            "control_bytes": 0,
        }
        report.extra["stage"] = stage
        reports = {h.name: HostReport(reachable=True) for h in hosts}
        report.hosts.update(reports)
        received: dict[str, list[str]] = {h.name: [] for h in hosts}
        fed_by: dict[str, str] = {}
        failed: dict[str, str] = {}
        pending = list(hosts)
        shared_with: dict[str, str] = {}
        for _round in range(MAX_ROUNDS):
            checks = pool.map(lambda s: _check(s, s.host.var.model_path, files, verify), pending)
            needs: dict[str, list[str]] = {}
            owners: dict[tuple[Any, ...], str] = {}
            for host in pending:
                outcome = checks[host.name]
                if outcome.error is not None:
                    reports[host.name].reachable = outcome.reachable
                    failed[host.name] = outcome.error.message
                    continue
                found = outcome.value
                assert found is not None
                if found.place is not None and found.place in owners:
                    shared_with[host.name] = owners[found.place]  # staged once, by the owner
                    continue
                if found.place is not None:
                    owners[found.place] = host.name
                if found.need:
                    needs[host.name] = found.need
            if not needs:
                break
            chain = [h for h in pending if h.name in needs]
            result = _relay_round(
                pool,
                chain,
                needs,
                files,
                manifest,
                source,
                (fanout, streams),
                (on_progress, on_sent, on_plan, on_event),
            )
            stage["rounds"].append(_round_json(result, needs))
            stage["control_bytes"] += result.control_bytes
            pending = []
            for name, node in result.nodes.items():
                received[name] = received.get(name, []) + node.received
                if node.fed_by:
                    fed_by[name] = node.fed_by
                if name not in {h.name for h in hosts}:
                    continue
                if node.done and not node.bad:
                    failed.pop(name, None)
                    continue
                failed[name] = (
                    "; ".join(node.write_errors.values())
                    or node.error
                    or f"bad files: {', '.join(node.bad)}"
                )
                lost_by = [n for n, o in result.nodes.items() if name in o.lost]
                if not node.stopped and (lost_by or node.bad):
                    continue  # it failed on its own: do not try again in this task
                pending.append(next(h for h in hosts if h.name == name))
            if not pending:
                break
        for host in hosts:
            name = host.name
            path = host.var.model_path
            got = received.get(name, [])
            size = sum(int(files[f]["size"]) for f in got if f in files)
            data: dict[str, Any] = {"received": got, "bytes": size}
            if name in fed_by:
                data["from"] = fed_by[name]
            if name in failed:
                reports[name].results.append(
                    Result(
                        STEP,
                        FAILED,
                        f"{path}: {failed[name]}"
                        + (f" (after receiving {len(got)} file(s))" if got else ""),
                        f"{RUNBOOK}#relay-node-failed",
                        data,
                    )
                )
            elif name in shared_with and shared_with[name] in failed:
                owner = shared_with[name]
                reports[name].results.append(
                    Result(
                        STEP,
                        FAILED,
                        f"{path} is the same directory as on {owner} (shared file system), "
                        f"where staging failed: {failed[owner]}",
                        f"{RUNBOOK}#relay-node-failed",
                        {"shared_with": owner, **data},
                    )
                )
            elif name in shared_with:
                owner = shared_with[name]
                sent = f"staged once through {owner}" if received.get(owner) else "nothing to send"
                reports[name].results.append(
                    Result(
                        STEP,
                        OK,
                        f"{path} is the same directory as on {owner} (shared file system): {sent}",
                        None,
                        {"shared_with": owner, **data},
                    )
                )
            elif got:
                origin = data.get("from") or source.label()
                reports[name].results.append(
                    Result(
                        STEP,
                        CHANGED,
                        f"{path}: received {len(got)} file(s), {size / 1e6:.1f} MB from {origin}, "
                        "size and hash verified",
                        None,
                        data,
                    )
                )
            else:
                reports[name].results.append(
                    Result(
                        STEP,
                        OK,
                        f"{path} holds all {len(files)} files ({total / 1e9:.3g} GB): "
                        "nothing to send",
                        None,
                        data,
                    )
                )
        stage["shared"] = shared_with
        stage["seconds"] = round(time.monotonic() - began, 3)
    return report


def _relay_round(
    pool: SessionPool,
    chain: list[Host],
    needs: dict[str, list[str]],
    files: dict[str, Any],
    manifest: dict[str, Any],
    source: Source,
    shape: tuple[int, int],
    hooks: tuple[Any, Any, Any, Any],
) -> RelayResult:
    on_progress, on_sent, on_plan, on_event = hooks
    fanout, streams = shape
    names = sorted({f for need in needs.values() for f in need})
    stream = [StreamFile(n, int(files[n]["size"]), str(files[n]["hash"])) for n in names]
    if on_plan:
        on_plan({h: sum(int(files[f]["size"]) for f in need) for h, need in needs.items()})
    members: list[Member] = []
    if source.host is not None:
        session = pool.session(source.host)
        in_chain = source.host.name in needs
        members.append(
            Member(
                session,
                source.host.var.model_path if in_chain else source.path,
                needs.get(source.host.name, []),
                "disk",
                source.path,
            )
        )
    targets = [h for h in chain if source.host is None or h.name != source.host.name]
    # the node locks: taken and released on every node at once (one round trip each,
    # in parallel: 16 in a row cost seconds)
    locks = pool.map(lambda s: acquire_lock(s, "model.stage"), targets)
    refused = {n: str(o.error.message) for n, o in locks.items() if o.error is not None}
    try:
        for host in targets:
            if host.name in refused:
                continue
            upstream = "stdin" if not members else "socket"
            members.append(
                Member(pool.session(host), host.var.model_path, needs[host.name], upstream)
            )
        result = run_relays(
            members,
            stream,
            manifest,
            streams=streams,
            fanout=fanout,
            source=Path(source.path) if source.host is None else None,
            on_progress=on_progress,
            on_sent=on_sent,
            on_event=on_event,
        )
    finally:
        held = {n: o.value for n, o in locks.items() if o.value is not None}
        pool.map(lambda s: _release(s, held[s.host.name]), [h for h in targets if h.name in held])
    for name, message in refused.items():
        result.nodes[name] = NodeOutcome(name, error=message)
    return result


def _release(session: Session, lock: Any) -> None:
    with contextlib.suppress(HostError):
        release_lock(session, lock)


def _round_json(result: RelayResult, needs: dict[str, list[str]]) -> dict[str, Any]:
    return {
        "tree": result.tree,
        "stream_bytes": result.stream_bytes,
        "control_bytes": result.control_bytes,
        "seconds": round(result.seconds, 3),
        "needs": needs,
        "nodes": {
            name: {
                "done": node.done,
                "received": node.received,
                "written": node.written,
                "fed_by": node.fed_by,
                "lost": node.lost,
                "replayed": node.replayed,
                "error": node.error,
            }
            for name, node in result.nodes.items()
        },
        "chains": [
            {
                "files": chain.files,
                "bytes": chain.stream_bytes,
                "tree": chain.tree,
                "control_bytes": chain.control_bytes,
                "seconds": round(chain.seconds, 3),
                "fed_by": {n: o.fed_by for n, o in chain.nodes.items() if o.fed_by},
                "lost": {n: o.lost for n, o in chain.nodes.items() if o.lost},
            }
            for chain in result.chains
        ],
    }


__all__ = ["Source", "index_shards", "parse_source", "stage_model", "streams_for"]


def runbook_links() -> list[str]:
    """Every runbook link this module can print (checked by tests/unit/test_runbook_links)."""
    return [f"{RUNBOOK}#relay-node-failed"]
