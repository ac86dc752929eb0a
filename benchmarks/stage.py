"""Stage a model of S bytes to 1, 4, 8 and 16 lab nodes under a per-node bandwidth cap:
star (each node fed by the control node) versus relay (a pipelined chain).

    XPUFLEET_LAB_DIR=... XPUFLEET_LAB_NET=... XPUFLEET_LAB_PORT=... \
        .venv/bin/python benchmarks/stage.py [--size-mb 64] [--cap-mbit 80] \
        [--nodes 1,4,8,16] [--modes star,relay] [--star-mb MB] [--streams 1,2,4]

Brings the lab up with max(N) nodes (left up unless --down). The caps (`tc` htb on lo,
xpufleet/lab/shaping.py: every node's and the control node's sending rate, only this
lab's addresses) are on only while the figures are taken and always removed. Prints per
N and mode: wall time, the ideal S/cap and the time against one node (the target:
16 nodes <= 1.5 x one node), control-node bytes, the benchmark's own CPU seconds (the
control node: paramiko and the event readers) and the load average; right after the
relay to the most nodes, a no-op re-stage of them next to a doctor run. Both modes run
the same node script (relay/node.py), so only the topology differs. The source is
hashed before the first timed run (its manifest is kept), so no run pays for it.

`--streams 1,2,4` runs the relay with each number of parallel relays (model.stage
--streams: each carries a share of the files) and prints the stream rate in MB/s
(S / wall time); `--cap-mbit 0` runs uncapped (no `tc`), where the figures are what the
machine's CPU, disk and SSH give. `--from-node` stages from a node instead of the control
node (one more lab node, outside the targets, holding a copy of the model), so the head
reads its disk and no byte goes through the control node's SSH channel.

Star takes N x S/cap by construction (the control node's own link is capped): --star-mb
runs it on a smaller model so 2 GB runs finish in the hour. The cap must leave CPU and
disk to spare, or the figures measure the lab machine rather than the topology: every
lab node runs on the same 2 cores and writes to the same disk, so 16 nodes at C each
need 16 x C of disk writes and 16 x C x (node CPU per byte: benchmarks/relay_cpu.py)
of CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from xpufleet.doctor import run_doctor
from xpufleet.executor import SessionPool
from xpufleet.host import Host
from xpufleet.inventory import load_inventory
from xpufleet.lab import Lab
from xpufleet.lab.model import write_model
from xpufleet.lab.shaping import caps
from xpufleet.relay import Member, StreamFile, run_relay
from xpufleet.stage import Source, local_manifest, parse_source, stage_model

DEST = "/models/xpufleet-bench"
#: where --from-node puts the model on the source node
ON_NODE = "/models/xpufleet-bench-source"


def hosts_with_dest(lab: Lab, count: int) -> list[Host]:
    hosts = load_inventory(lab.inventory_path).select(None)[:count]
    for host in hosts:
        host.vars["model_path"] = DEST
    return hosts


def clean(lab: Lab, count: int) -> None:
    for i in range(1, count + 1):
        shutil.rmtree(lab.node_dir(i) / "fs" / DEST.lstrip("/"), ignore_errors=True)


def star(lab: Lab, hosts: list[Host], source: Path) -> tuple[float, int]:
    """Every node fed by the control node at once: N one-member relays."""
    files = local_manifest(str(source))["files"]
    stream = [StreamFile(n, int(f["size"]), f["hash"]) for n, f in sorted(files.items())]
    sent: dict[str, int] = {}
    began = time.monotonic()
    with SessionPool(hosts, lab.ssh_options(), len(hosts)) as pool:

        def one(host: Host) -> None:
            member = Member(pool.session(host), DEST, [s.name for s in stream], "stdin")
            result = run_relay([member], stream, {"files": files}, source=source)
            assert not result.failed, result.nodes
            sent[host.name] = result.control_bytes

        threads = [threading.Thread(target=one, args=(h,)) for h in hosts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return time.monotonic() - began, sum(sent.values())


def relay(
    lab: Lab, hosts: list[Host], source: Path, streams: int = 1, origin: Host | None = None
) -> tuple[float, int, Any]:
    began = time.monotonic()
    seen: dict[str, dict[str, float]] = {}

    def on_event(name: str, event: dict[str, Any]) -> None:
        kind, now = event.get("event", "?"), time.monotonic() - began
        if kind == "done":  # a node is done when its last stream is
            seen.setdefault(kind, {})[name] = now
        else:
            seen.setdefault(kind, {}).setdefault(name, now)

    report = stage_model(
        hosts,
        lab.ssh_options(),
        Source(ON_NODE, origin) if origin else parse_source(str(source), hosts),
        streams=streams,
        on_event=on_event,
    )
    seconds = time.monotonic() - began
    assert report.exit_code() == 0, report.to_json()
    report.extra["phases"] = phases(seen, seconds)
    return seconds, report.extra["stage"]["control_bytes"], report


def phases(seen: dict[str, dict[str, float]], total: float) -> str:
    """Where a relay's wall time goes, from the node events' first arrival (a node's
    `done`: its last stream's; control node's clock): manifest+check+locks until the
    first node listens, every node listening, bytes flowing until the first/last node
    is done, the rest (locks released, report)."""
    if "listen" not in seen or "done" not in seen:
        return "no relay"
    first_listen, all_listen = min(seen["listen"].values()), max(seen["listen"].values())
    first_byte = min(seen.get("progress", seen["done"]).values())
    first_done, last_done = min(seen["done"].values()), max(seen["done"].values())
    return (
        f"setup {first_listen:.1f} s, nodes up {all_listen - first_listen:.1f} s, "
        f"to first bytes {first_byte - all_listen:.1f} s, stream {first_done - first_byte:.1f} s, "
        f"acks {last_done - first_done:.1f} s, after {total - last_done:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mb", type=int, default=64)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--cap-mbit", type=float, default=80.0, help="0: no cap")
    parser.add_argument("--nodes", default="1,4,8,16")
    parser.add_argument("--modes", default="star,relay")
    parser.add_argument(
        "--star-mb",
        type=int,
        default=None,
        help="model size for star (default --size-mb): star takes N x S/cap by construction",
    )
    parser.add_argument("--streams", default="1", help="relays at once, e.g. 1,2,4")
    parser.add_argument("--from-node", action="store_true", help="the source on a node")
    parser.add_argument("--down", action="store_true")
    args = parser.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]
    widths = [int(k) for k in args.streams.split(",")]
    lab = Lab.from_env()
    lab.up(nodes=max(counts) + (1 if args.from_node else 0))
    sources = {"relay": model(args.size_mb, args.shards)}
    origin = None
    if args.from_node:
        origin = load_inventory(lab.inventory_path).select(None)[max(counts)]
        on_node = lab.node_dir(max(counts) + 1) / "fs" / ON_NODE.lstrip("/")
        shutil.copytree(sources["relay"], on_node, dirs_exist_ok=True)  # mtimes kept
        print(f"source: {origin.name}:{ON_NODE}")
    sources["star"] = model(args.star_mb, args.shards) if args.star_mb else sources["relay"]
    rate = args.cap_mbit * 1e6 / 8
    for source in set(sources.values()):
        local_manifest(str(source))  # hashed once here, not inside the first timed run
        size = size_of(source)
        ideal = f"ideal S/cap = {size / rate:.1f} s" if rate else "uncapped"
        print(f"model {size / 1e6:.1f} MB in {args.shards} shards; cap {args.cap_mbit:g} "
              f"Mbit/s per node; {ideal}")  # fmt: skip
    print(f"{'nodes':>5} {'mode':>6} {'K':>2} {'wall s':>8} {'MB/s':>7} {'x ideal':>8} "
          f"{'x 1 node':>8} {'control MB':>11} {'x S':>5} {'ctl CPU-s':>9} "
          f"{'load':>5}")  # fmt: skip
    one: dict[int, float] = {}
    shaped = caps(lab, max(counts), args.cap_mbit) if rate else contextlib.nullcontext()
    try:
        with shaped:
            for count in counts:
                hosts = hosts_with_dest(lab, count)
                for mode in args.modes.split(","):
                    if mode == "star" and count == 1:
                        continue  # one node: the same single link as the relay
                    for width in widths if mode == "relay" else [1]:
                        source = sources[mode]
                        size = size_of(source)
                        clean(lab, count)
                        cpu = time.process_time()
                        if mode == "star":
                            seconds, sent = star(lab, hosts, source)
                        else:
                            seconds, sent, report = relay(lab, hosts, source, width, origin)
                        cpu = time.process_time() - cpu
                        if mode == "relay" and count == 1:
                            one[width] = seconds
                        base = one.get(width) if mode == "relay" else None
                        versus = f"{seconds / base:>8.2f}" if base else f"{'':>8}"
                        ideal = f"{seconds / (size / rate):>8.2f}" if rate else f"{'-':>8}"
                        print(f"{count:>5} {mode:>6} {width:>2} {seconds:>8.1f} "
                              f"{size / seconds / 1e6:>7.1f} {ideal} {versus} "
                              f"{sent / 1e6:>11.1f} {sent / size:>5.2f} {cpu:>9.1f} "
                              f"{os.getloadavg()[0]:>5.1f}", flush=True)  # fmt: skip
                        if mode != "star":
                            print(f"{'':>13}{report.extra['phases']}", flush=True)
                        if mode == "relay" and count == max(counts) and width == widths[-1]:
                            noop_vs_doctor(lab, hosts, source, width, origin)
    finally:
        clean(lab, max(counts))
        if args.from_node:
            shutil.rmtree(lab.node_dir(max(counts) + 1) / "fs" / ON_NODE.lstrip("/"))
        if args.down:
            lab.down()


def model(size_mb: int, shards: int) -> Path:
    source = Path(tempfile.gettempdir()) / f"xpufleet-bench-model-{size_mb}MB-{shards}"
    write_model(source, shards=shards, shard_bytes=(size_mb << 20) // shards)
    return source


def size_of(source: Path) -> int:
    return sum(p.stat().st_size for p in source.iterdir() if p.is_file() and p.name[0] != ".")


def noop_vs_doctor(
    lab: Lab, hosts: list[Host], source: Path, streams: int, origin: Host | None
) -> None:
    """Every node holds the model: a re-stage next to a doctor run of the same nodes."""
    noop, sent, _ = relay(lab, hosts, source, streams, origin)
    began = time.monotonic()
    run_doctor(hosts, lab.ssh_options())
    doctor = time.monotonic() - began
    print(f"no-op re-stage of {len(hosts)} nodes: {noop:.2f} s, {sent} bytes sent; "
          f"doctor of the same nodes: {doctor:.2f} s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
