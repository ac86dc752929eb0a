"""Stress `invoke logs --follow`: one Ctrl-C must end it, also on a loaded machine.

    XPUFLEET_LAB_DIR=... XPUFLEET_LAB_NET=... XPUFLEET_LAB_PORT=... \\
        .venv/bin/python benchmarks/logs_follow.py [--runs 30] [--hogs 8] [--keep]

The scenario of tests/lab/test_launch.py's tp8-over-two-nodes test, repeated: the lab
is converged to 2 healthy nodes and provisioned once, `launch --tp 8 --nnodes 2` is
started (library call), then `--runs` times, with `--hogs` busy-looping processes
competing for the CPU: `invoke logs --follow --json` is started, its first line read,
ONE SIGINT sent, and the time until it exits is taken. A run that has not exited after
`--deadline` seconds is a hang: its threads' stacks are dumped (faulthandler, SIGABRT)
and printed, and the run counts as stuck. At the end the run is stopped.

Figures: exit_s (SIGINT to exit; median, max), stuck runs, exit codes (130 expected),
the load average. Everything is simulated on one shared machine (real sshd, the SGLang
stand-in on gloo/CPU); nothing ran on Intel hardware.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from launch import lab_hosts, provision  # noqa: E402

from xpufleet.lab import Lab  # noqa: E402
from xpufleet.launch.control import run_stop  # noqa: E402
from xpufleet.launch.plan import plan_launch  # noqa: E402
from xpufleet.launch.runner import launch  # noqa: E402

INVOKE = str(Path(sys.executable).parent / "invoke")
HOG = "import os, sys\nos.nice(0)\nwhile True:\n    pass\n"


def follow_once(inventory: Path, deadline: float) -> dict:
    """One `logs --follow`: first line, one SIGINT, seconds until it exits."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    with tempfile.TemporaryFile(mode="w+") as stderr:
        proc = subprocess.Popen(
            [INVOKE, "logs", "--follow", "--json", "--hosts", str(inventory)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            cwd=ROOT,
            env=env,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline()
        tic = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=deadline)
            stuck = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler dumps every thread's stack
            code = proc.wait()
            stuck = True
        seconds = time.monotonic() - tic
        stderr.seek(0)
        dump = stderr.read() if stuck else ""
    return {
        "exit_s": round(seconds, 3),
        "code": code,
        "stuck": stuck,
        "first_line": bool(first.strip()),
        "dump": dump[-6000:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--hogs", type=int, default=8, help="busy-looping processes")
    parser.add_argument("--deadline", type=float, default=60.0, help="seconds = stuck")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = parser.parse_args()
    lab = Lab.from_env()
    print(f"lab {lab}: bringing up 2 nodes and provisioning", file=sys.stderr)
    lab.up(nodes=2)
    hosts = lab_hosts(lab, 2)
    options = lab.ssh_options(command_timeout=600.0)
    runs_dir = Path(tempfile.mkdtemp(prefix="logs-follow-bench-runs-"))
    hogs: list[subprocess.Popen] = []
    rows = []
    try:
        provision(lab, hosts)
        report = launch(
            plan_launch(hosts, 8, 2), {h.name: h for h in hosts}, options, forks=2,
            runs_dir=runs_dir,
        )  # fmt: skip
        if not report.extra.get("ready"):
            raise SystemExit(f"launch failed: {json.dumps(report.to_json())[:3000]}")
        hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
        for run in range(args.runs):
            row = follow_once(lab.inventory_path, args.deadline)
            row["load"] = round(os.getloadavg()[0], 2)
            rows.append(row)
            print(json.dumps({"run": run + 1, **{k: v for k, v in row.items() if k != "dump"}}),
                  file=sys.stderr)  # fmt: skip
            if row["stuck"]:
                print(row["dump"], file=sys.stderr)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        run_stop(hosts, options, forks=2, runs_dir=runs_dir)
        if not args.keep:
            lab.down()
    times = [r["exit_s"] for r in rows]
    stuck = sum(r["stuck"] for r in rows)
    codes = sorted({r["code"] for r in rows})
    print(f"{len(rows)} runs under {args.hogs} CPU hogs: SIGINT to exit median "
          f"{statistics.median(times):.2f} s, max {max(times):.2f} s; stuck (> "
          f"{args.deadline:g} s): {stuck}; exit codes {codes}; load average "
          f"{os.getloadavg()[0]:.2f}")  # fmt: skip
    return 1 if stuck or codes != [130] else 0


if __name__ == "__main__":
    sys.exit(main())
