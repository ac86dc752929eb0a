"""Push one big file to N lab nodes in parallel; MB/s per node, total, bytes sent.

    XPUFLEET_LAB_DIR=... XPUFLEET_LAB_NET=... XPUFLEET_LAB_PORT=... \
        .venv/bin/python benchmarks/push.py [--size-mb 500] [--nodes 4,8,16]

Brings the lab up with max(N) nodes (left up unless --down). For each N: provision's
streaming push (Session.stream_to, 1 MiB writes, size+sha256 verified on the node,
atomic rename) to nodes 1..N at once. For one node it also times Fabric's
Connection.put (paramiko SFTP) and the same push without the node-side sha256, so the
cost of each part is visible. Loopback, a shared 2-core machine: these figures say how
the methods compare here, not what a real network gives.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path

from fabric import Connection

from xpufleet.executor import SessionPool
from xpufleet.lab import Lab
from xpufleet.provision.manifest import sha256_file
from xpufleet.provision.transfer import push_file
from xpufleet.transport import Session

DEST = "/var/lib/xpufleet/bench-push"


def make_file(size_mb: int) -> Path:
    path = Path(tempfile.gettempdir()) / f"xpufleet-push-{size_mb}MB.bin"
    if not path.exists() or path.stat().st_size != size_mb << 20:
        with path.open("wb") as fh:
            for _ in range(size_mb):
                fh.write(os.urandom(1 << 20))
    return path


def push_parallel(lab: Lab, n: int, source: Path, sha: str | None) -> dict[str, object]:
    hosts = lab.hosts()[:n]
    sent: dict[str, int] = {}
    took: dict[str, float] = {}
    lock = threading.Lock()

    def work(session: Session) -> None:
        start = time.monotonic()
        count = push_file(session, source, DEST, name="push.bin", sha256=sha)
        with lock:
            sent[session.host.name] = count
            took[session.host.name] = time.monotonic() - start
        session.run(f"rm -f {DEST}/push.bin")

    with SessionPool(hosts, lab.ssh_options(command_timeout=900.0), forks=n) as pool:
        for host in hosts:  # connect first: time the bytes, not the handshakes
            pool.session(host)
        start = time.monotonic()
        outcomes = pool.map(work)
        wall = time.monotonic() - start
    errors = {k: o.error.message for k, o in outcomes.items() if o.error}
    if errors:
        raise SystemExit(f"push failed: {errors}")
    size_mb = source.stat().st_size / 1e6
    return {
        "n": n,
        "wall_s": wall,
        "per_node_mb_s": sorted(size_mb / t for t in took.values()),
        "total_mb_s": size_mb * n / wall,
        "sent_mb": sum(sent.values()) / 1e6,
    }


def fabric_put(lab: Lab, source: Path) -> float:
    host = lab.hosts()[0]
    conn = Connection(
        host.address,
        user=host.user,
        port=host.port,
        connect_kwargs={"key_filename": [str(lab.key_file)], "look_for_keys": False},
    )
    conn.client.load_host_keys(str(lab.known_hosts))
    conn.run(f"mkdir -p {DEST}", hide=True)
    start = time.monotonic()
    conn.put(str(source), f"{DEST}/put.bin")
    took = time.monotonic() - start
    conn.run(f"rm -f {DEST}/put.bin", hide=True)
    conn.close()
    return source.stat().st_size / 1e6 / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--nodes", default="4,8,16")
    parser.add_argument("--down", action="store_true", help="bring the lab down at the end")
    args = parser.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]
    lab = Lab.from_env()
    lab.up(nodes=max(counts))
    source = make_file(args.size_mb)
    sha = sha256_file(source)
    print(f"file: {args.size_mb} MiB ({source.stat().st_size / 1e6:.0f} MB), lab {lab}")
    try:
        one = push_parallel(lab, 1, source, None)
        one_sha = push_parallel(lab, 1, source, sha)
        put = fabric_put(lab, source)
        print("one node:")
        print(f"  stream_to, no node-side hash : {one['total_mb_s']:7.1f} MB/s")
        print(f"  stream_to + sha256 on node   : {one_sha['total_mb_s']:7.1f} MB/s (provision)")
        print(f"  Fabric put (paramiko SFTP)   : {put:7.1f} MB/s")
        print(
            f"{'N':>3} {'wall s':>7} {'total MB/s':>10} {'per node MB/s (min..max)':>26} "
            f"{'control sent MB':>15}"
        )
        for n in counts:
            r = push_parallel(lab, n, source, sha)
            per = r["per_node_mb_s"]
            assert isinstance(per, list)
            print(
                f"{n:>3} {r['wall_s']:7.1f} {r['total_mb_s']:10.1f} "
                f"{per[0]:12.1f} .. {per[-1]:<11.1f} {r['sent_mb']:15.0f}"
            )
    finally:
        if args.down:
            lab.down()


if __name__ == "__main__":
    main()
