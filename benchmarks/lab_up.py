"""How long the lab takes: lab.up for 4 and 32 nodes (cold and converging), and lab.down.

    .venv/bin/python benchmarks/lab_up.py [--runs 3] [--json]

Uses its own lab (a temporary directory, the address prefix of XPUFLEET_LAB_NET or
127.0.1, port XPUFLEET_LAB_PORT + 2 or 22024) so it never disturbs a running lab, and
brings it down at the end. The base Python environment is created before timing (it is
a one-off per machine). Figures are wall-clock seconds on this machine; the machine's
load from other processes is printed next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from xpufleet.lab import Lab
from xpufleet.lab.pybase import ensure_base_env


def _timed(action) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ensure_base_env()
    net = os.environ.get("XPUFLEET_LAB_NET") or "127.0.1"
    port = int(os.environ.get("XPUFLEET_LAB_PORT") or 22022) + 2
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="xpufleet-lab-bench-") as tmp:
        lab = Lab(Path(tmp) / "lab", net, port)
        try:
            for nodes in (4, 32):
                for _ in range(args.runs):
                    lab.down()
                    cold = _timed(lambda n=nodes: lab.up(nodes=n))
                    again = _timed(lambda n=nodes: lab.up(nodes=n))
                    assert lab.status().all_up, "lab did not come up"
                    down = _timed(lab.down)
                    results.setdefault(f"up {nodes} nodes", []).append(cold)
                    results.setdefault(f"up {nodes} nodes again (no change)", []).append(again)
                    results.setdefault(f"down {nodes} nodes", []).append(down)
        finally:
            lab.down()
    summary = {
        name: {"median_s": round(statistics.median(v), 3), "runs": [round(x, 3) for x in v]}
        for name, v in results.items()
    }
    load = os.getloadavg()[0]
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "load1": load, "results": summary}, indent=2))
        return
    print(f"lab timings ({os.cpu_count()} CPUs, load average {load:.2f}), median of {args.runs}:")
    for name, item in summary.items():
        print(f"  {name:<32} {item['median_s']:7.3f} s   runs: {item['runs']}")


if __name__ == "__main__":
    main()
