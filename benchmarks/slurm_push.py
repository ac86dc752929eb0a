"""One file to N lab nodes over Slurm: the relay over srun steps vs per-node srun stdin vs
sbcast; wall time and the bytes the control node sent.

    XPUFLEET_LAB_DIR=... XPUFLEET_LAB_NET=... XPUFLEET_LAB_PORT=... \\
        .venv/bin/python benchmarks/slurm_push.py [--size-mb 100] [--nodes 4] [--runs 3]

Brings the lab up with N nodes and its real Slurm (left up unless --down), takes an
N-node allocation (salloc --no-shell, cancelled at the end) and copies one random file
into /var/lib/xpufleet/bench-slurm-push on every node (each lab node has its own), four ways:

- `relay`: what provision does now: each host's thread asks the shared FileRelay,
  whose members are srun steps (ProcessChannel); the control node feeds the first node's
  stdin, nodes forward over TCP while writing (sha256 checked on each node);
- `direct`: what provision did before: `push_file` per node through its own srun
  step's stdin, all nodes at once (size + sha256 checked on each node);
- `sbcast -F1`: Slurm's broadcast with fanout 1 (the only fanout at which the control
  node sends each byte once: a store-and-forward chain, each block acknowledged by
  every node before the next leaves);
- `sbcast`: Slurm's default fanout (TreeWidth, 50: below it, the control node sends
  each block to every node itself).

Control-node bytes: counted for relay/direct; for sbcast derived from Slurm's routing
(src/common/forward.c: min(fanout, N) first-hop copies). Loopback on a shared 2-core
machine: how the methods compare here, not what a real network gives. Nothing ran on
Intel hardware.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from push import make_file  # benchmarks/push.py: this folder is sys.path[0]

from xpufleet.inventory import load_inventory
from xpufleet.lab import Lab
from xpufleet.provision.manifest import sha256_file
from xpufleet.provision.transfer import push_file
from xpufleet.relay.batch import FileRelay
from xpufleet.slurm import SlurmSession

DEST = "/var/lib/xpufleet/bench-slurm-push"
NAME = "push.bin"


def in_threads(work: Any, hosts: list[Any]) -> list[Any]:
    results: list[Any] = [None] * len(hosts)

    def run(i: int) -> None:
        results[i] = work(hosts[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(hosts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--down", action="store_true", help="bring the lab down at the end")
    args = parser.parse_args()
    lab = Lab.from_env()
    lab.up(nodes=args.nodes, slurm=True)
    env = lab.slurm.client_env()
    source = make_file(args.size_mb)
    sha = sha256_file(source)
    size = source.stat().st_size
    alloc = subprocess.run(
        ["salloc", f"-N{args.nodes}", "--no-shell", "--job-name=bench-slurm-push"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    match = re.search(r"Granted job allocation (\d+)", alloc.stderr)
    if not match:
        print(alloc.stderr, file=sys.stderr)
        return 1
    job = match.group(1)
    try:
        doc = yaml.safe_load(lab.slurm_inventory_path.read_text())
        doc["job"] = job
        inventory = Path(tempfile.mkdtemp()) / "inventory-slurm.yaml"
        inventory.write_text(yaml.safe_dump(doc))
        hosts = load_inventory(inventory).select(None)
        options = lab.ssh_options(command_timeout=900.0)

        def clean() -> None:
            in_threads(lambda h: SlurmSession(h, options).run(f"rm -rf {DEST}"), hosts)

        def relay() -> int:
            shared = FileRelay(len(hosts))

            def one(host: Any) -> int:
                session = SlurmSession(host, options)
                sent, route = shared.push(session, [(source, NAME)], DEST, lambda: 0)
                assert route.startswith("relayed"), (host.name, route)
                return sent

            return sum(in_threads(one, hosts))

        def direct() -> int:
            def one(host: Any) -> int:
                return push_file(SlurmSession(host, options), source, DEST, name=NAME, sha256=sha)

            return sum(in_threads(one, hosts))

        def sbcast(fanout: int | None) -> int:
            in_threads(lambda h: SlurmSession(h, options).run(f"mkdir -p {DEST}"), hosts)
            argv = ["sbcast", f"--jobid={job}", "--force"]
            argv += [f"--fanout={fanout}"] if fanout else []
            proc = subprocess.run(
                [*argv, str(source), f"{DEST}/{NAME}"],
                capture_output=True, text=True, env=env, timeout=900,
            )  # fmt: skip
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr.strip())
            return size * min(fanout or 50, len(hosts))

        methods = {
            "relay": relay,
            "direct": direct,
            "sbcast -F1": lambda: sbcast(1),
            "sbcast": lambda: sbcast(None),
        }
        load = os.getloadavg()[0]
        print(f"{args.size_mb} MB to {len(hosts)} nodes over srun, median of {args.runs}, "
              f"load {load:.1f}")  # fmt: skip
        print(f"{'method':12} {'seconds':>8} {'MB/s/node':>10} {'control MB':>11}")
        for label, method in methods.items():
            times, sent = [], 0
            for _ in range(args.runs):
                clean()
                start = time.monotonic()
                sent = method()
                times.append(time.monotonic() - start)
                check = in_threads(
                    lambda h: (
                        SlurmSession(h, options)
                        .run(f"sha256sum {DEST}/{NAME} | cut -c1-64")
                        .stdout.strip()
                    ),
                    hosts,
                )
                assert set(check) == {sha}, (label, check)
            took = statistics.median(times)
            print(f"{label:12} {took:8.2f} {size / 1e6 / took:10.1f} {sent / 1e6:11.1f}")
        clean()
    finally:
        subprocess.run(["scancel", job], env=env, capture_output=True, timeout=60)
        if args.down:
            lab.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
