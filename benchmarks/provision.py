"""Time a full and a no-op `provision` on N lab nodes, next to `doctor` on the same nodes.

    XPUFLEET_LAB_DIR=... XPUFLEET_LAB_NET=... XPUFLEET_LAB_PORT=... \
        .venv/bin/python benchmarks/provision.py [--nodes 4,8,16]

For each N: wipe what provision made on nodes 1..N (venv, env files, state), run a
full provision (oneAPI env, venv inheriting the lab's torch, the closed environment: the
SGLang stand-in wheel and its lock, pushed to offline nodes, SGLang files), then a no-op
provision (must report only ok/skip and send no wheel bytes), then doctor. Lab = real
sshd nodes on loopback of one shared 2-core machine; nothing ran on Intel hardware.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from xpufleet.doctor import run_doctor
from xpufleet.executor import fan_out
from xpufleet.inventory import load_inventory
from xpufleet.lab import Lab
from xpufleet.lab.wheelhouse import LAB_PIP_PACKAGES, standin_wheelhouse
from xpufleet.provision import ProvisionOptions, run_provision
from xpufleet.results import TaskReport
from xpufleet.transport import Session


def counts(report: TaskReport) -> str:
    return " ".join(f"{k}={v}" for k, v in report.summary().items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="4,8,16")
    parser.add_argument("--down", action="store_true", help="bring the lab down at the end")
    args = parser.parse_args()
    sizes = [int(n) for n in args.nodes.split(",")]
    lab = Lab.from_env()
    lab.up(nodes=max(sizes))
    wheels = Path(tempfile.mkdtemp(prefix="xpufleet-bench-wheels-"))
    manifest = standin_wheelhouse(wheels)  # the stand-in and its lock (cached per machine)
    print(
        f"wheelhouse: {len(manifest.wheels)} built + {len(manifest.locked)} locked wheels, "
        f"{manifest.size / 1e6:.1f} MB"
    )
    every = [
        dataclasses.replace(h, vars={**h.vars, "pip_packages": list(LAB_PIP_PACKAGES)})
        for h in load_inventory(lab.inventory_path).select(None)
    ]
    options = lab.ssh_options(command_timeout=600.0)
    print(f"{'N':>3} {'full s':>7} {'no-op s':>8} {'doctor s':>9}  no-op result")
    try:
        for n in sizes:
            hosts = every[:n]

            def wipe(session: Session) -> None:
                session.run(
                    "rm -rf /opt/xpufleet/venv /opt/xpufleet/env /opt/xpufleet/bin "
                    "/var/lib/xpufleet/wheels /var/lib/xpufleet/wheels.json "
                    "/var/lib/xpufleet/lock.json"
                )

            fan_out(hosts, wipe, options)
            start = time.monotonic()
            full = run_provision(hosts, options, wheels, forks=32, options=ProvisionOptions())
            full_s = time.monotonic() - start
            if full.exit_code() != 0:
                raise SystemExit(f"full provision failed: {full.to_json()}")
            start = time.monotonic()
            noop = run_provision(hosts, options, wheels, forks=32, options=ProvisionOptions())
            noop_s = time.monotonic() - start
            start = time.monotonic()
            run_doctor(hosts, options, forks=32)
            doctor_s = time.monotonic() - start
            print(
                f"{n:>3} {full_s:7.1f} {noop_s:8.2f} {doctor_s:9.2f}  {counts(noop)}, "
                f"wheel bytes sent {noop.extra['bytes_sent']}"
            )
    finally:
        if args.down:
            lab.down()


if __name__ == "__main__":
    main()
