"""What one relay node costs in CPU per byte, without SSH or a lab: N copies of the node
script (relay/node.py, or --node-script for an older one) on 127.0.0.1 in a chain, the
head fed by a pipe, every node writing every file; prints wall time and each node's
CPU seconds (user+system, page faults) and the mean per byte per node.

    .venv/bin/python benchmarks/relay_cpu.py [--nodes 4] [--size-mb 256] \
        [--python /usr/bin/python3] [--node-script OLD/node.py] [--hash blake2b-256]

The lab nodes run the machine's /usr/bin/python3 (the default here). On 2 cores the
wall time says little; the CPU per byte per node is what bounds how many lab nodes
can stream at a given per-node cap before the relay becomes CPU-bound (see
benchmarks/stage.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

NODE = Path(__file__).resolve().parents[1] / "xpufleet" / "relay" / "node.py"


def digest(path: Path, name: str) -> str:
    hasher = hashlib.sha256() if name == "sha256" else hashlib.blake2b(digest_size=32)
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            hasher.update(block)
    return hasher.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--python", default="/usr/bin/python3")
    parser.add_argument("--node-script", type=Path, default=NODE)
    parser.add_argument(
        "--hash", default="sha256", help="the node script's hash (sha256, blake2b-256)"
    )
    args = parser.parse_args()
    script = args.node_script.read_text()
    work = Path(tempfile.mkdtemp(prefix="xpufleet-relay-cpu-"))
    try:
        src = work / "src"
        src.mkdir()
        files: list[dict[str, Any]] = []
        for i in range(args.files):
            path = src / f"shard{i}"
            path.write_bytes(os.urandom((args.size_mb << 20) // args.files))
            files.append(
                {"name": path.name, "size": path.stat().st_size, "hash": digest(path, args.hash)}
            )
        total = sum(f["size"] for f in files)
        names = [f"n{i}" for i in range(args.nodes)]
        tree: dict[str, list[str]] = {n: [] for n in names}
        for i in range(1, args.nodes):
            tree[names[i - 1]].append(names[i])
        procs, endpoints = [], {}
        for i, name in enumerate(names):
            config = {
                "name": name, "dir": str(work / name), "files": files,
                "want": [f["name"] for f in files], "upstream": "stdin" if i == 0 else "socket",
                "token": "t", "listen": "127.0.0.1", "bind": "127.0.0.1", "manifest": {},
            }  # fmt: skip
            proc = subprocess.Popen(
                [args.python, "-c", script, "relay"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write((json.dumps(config) + "\n").encode())
            proc.stdin.flush()
            endpoints[name] = ["127.0.0.1", json.loads(proc.stdout.readline())["port"]]
            procs.append(proc)
        began = time.monotonic()
        topology = (json.dumps({"tree": tree, "endpoints": endpoints}) + "\n").encode()
        ends: dict[str, str] = {}

        def watch(name: str, proc: subprocess.Popen[bytes]) -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = json.loads(line)
                if event.get("event") in ("done", "error", "bad"):
                    ends[name] = event["event"]

        threads = [
            threading.Thread(target=watch, args=(n, p)) for n, p in zip(names, procs, strict=True)
        ]
        for proc, thread in zip(procs, threads, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(topology)
            proc.stdin.flush()
            thread.start()
        head = procs[0].stdin
        assert head is not None
        for f in files:
            with (src / f["name"]).open("rb") as handle:
                while block := handle.read(1 << 20):
                    head.write(block)
        head.flush()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - began
        cpu = []
        for name, proc in zip(names, procs, strict=True):
            assert proc.stdin is not None
            proc.stdin.close()
            _, _, usage = os.wait4(proc.pid, 0)
            cpu.append(usage.ru_utime + usage.ru_stime)
            print(f"  {name}: user {usage.ru_utime:.2f} s, system {usage.ru_stime:.2f} s, "
                  f"page faults {usage.ru_minflt}, {ends.get(name)}")  # fmt: skip
        print(f"{args.nodes} nodes, {total / 1e6:.0f} MB, {args.python}: wall {wall:.2f} s, "
              f"CPU {sum(cpu):.2f} s, {sum(cpu) / args.nodes / total * 1e9:.2f} ns per byte "
              "per node")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
