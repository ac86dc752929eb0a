"""vLLM launch preflight on the Ray head, shipped into the run directory: every planned
node must be in the Ray cluster, alive, with the GPUs the plan gives it, before the
OpenAI server starts (the executor would otherwise wait for its placement group, or put
two workers on one device).

Usage: ray_preflight.py RUN_JSON. Runs with the node's Python environment (it imports
ray). Connects once as a Ray driver (`ray.init`, retried until the head's GCS answers),
then reads `ray.nodes()` every half second until every planned node's address is there
with `Resources["GPU"]` = its planned workers, or the preflight timeout passes. Writes
`preflight.json` next to RUN_JSON either way; exit 0 when complete, 3 otherwise (the
launch script stops, its supervisor stops every node, the control node names the nodes
that never joined).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

NOT_READY = 3


def _log(message: str) -> None:
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] ray preflight: {message}", flush=True)


def nodes_seen(ray: Any) -> dict[str, float]:
    """{address: GPUs} of the cluster's alive nodes."""
    seen: dict[str, float] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            address = str(node.get("NodeManagerAddress"))
            seen[address] = seen.get(address, 0.0) + float(node["Resources"].get("GPU", 0))
    return seen


def judge(planned: list[dict[str, Any]], seen: dict[str, float]) -> list[dict[str, Any]]:
    return [
        {
            "host": node["host"],
            "address": node["address"],
            "expected": node["gpus"],
            "joined": node["address"] in seen,
            "gpus": seen.get(node["address"], 0.0),
            "gpus_ok": seen.get(node["address"], 0.0) == float(node["gpus"]),
        }
        for node in planned
    ]


def main(argv: list[str]) -> int:
    run_json = Path(argv[1])
    cfg = json.loads(run_json.read_text())["preflight"]
    out = run_json.with_name("preflight.json")
    started = time.monotonic()
    deadline = started + float(cfg["timeout"])
    report: dict[str, Any] = {"engine": "vllm", "ok": False, "nodes": [], "error": None}
    import ray

    connected = False
    while not connected:
        try:
            ray.init(
                address=cfg["ray_address"],
                _node_ip_address=cfg["node_ip"],
                logging_level="ERROR",
                log_to_driver=False,
            )
            connected = True
        except Exception as exc:  # noqa: BLE001 - any failure to reach the GCS: retry
            if time.monotonic() > deadline:
                report["error"] = f"cannot reach the Ray head at {cfg['ray_address']}: {exc}"
                break
            time.sleep(1.0)
    nodes = judge(cfg["nodes"], {})
    while connected:
        nodes = judge(cfg["nodes"], nodes_seen(ray))
        if all(n["gpus_ok"] for n in nodes):
            report["ok"] = True
            break
        if time.monotonic() > deadline:
            missing = [n["host"] for n in nodes if not n["gpus_ok"]]
            report["error"] = f"not in the cluster with their GPUs after {cfg['timeout']} s: " + (
                ", ".join(missing)
            )
            break
        time.sleep(0.5)
    report["nodes"] = nodes
    report["seconds"] = round(time.monotonic() - started, 3)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report))  # one line: the control node reads it as one
    tmp.replace(out)
    _log("ok" if report["ok"] else f"failed: {report['error']}")
    if connected:
        ray.shutdown()
    return 0 if report["ok"] else NOT_READY


if __name__ == "__main__":
    sys.exit(main(sys.argv))
