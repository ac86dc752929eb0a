# ruff: noqa: UP004, UP015, UP021, UP022, UP031, UP041
"""Runs ON THE NODE in the environment launch uses: import what the engine loads at start.

Sent as text (never installed), run by the venv's interpreter with the oneAPI
environment sourced: by doctor inside its env probe (the env snippet of the doctor
probe execs it with ARGS set) and by provision after installing (`python -c <this file> <json>`).
ARGS = {"modules": [...], "lock": "<state_dir>/lock.json"}. Modules are imported in
order and the first failure stops (what a launch would hit first); a missing module is
named together with the locked distribution that provides it (from the node's lock
copy, which provision writes). Standard library only, python3 >= 3.6.
"""

import importlib
import json
import sys

ARGS = globals().get("ARGS") or (json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})


def _provider(module):
    """The distribution the node's lock says provides top-level `module`, else None."""
    if not module:
        return None
    try:
        with open(ARGS.get("lock") or "") as fh:
            lock = json.load(fh)
    except (OSError, ValueError):
        return None
    top = module.split(".")[0]
    return (lock.get("modules") or {}).get(top)


def _triton():
    """Which Triton, and whether it has Intel's XPU backend (the PyPI CUDA one has not)."""
    try:
        from importlib import metadata, util
    except ImportError:
        return None
    version = None
    for name in ("pytorch-triton-xpu", "triton-xpu", "triton"):
        try:
            version = metadata.version(name)
            break
        except Exception:
            continue
    if version is None:
        return None
    try:
        intel = util.find_spec("triton.backends.intel") is not None
    except Exception:
        intel = False
    return {"version": version, "intel_backend": intel}


def check_imports(modules):
    result = {"ok": [], "failed": None}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:  # SystemExit / errors raised by module top code too
            missing = getattr(exc, "name", None) if isinstance(exc, ImportError) else None
            result["failed"] = {
                "module": name,
                "error": ("%s: %s" % (type(exc).__name__, exc))[:400],
                "missing": missing,
                "distribution": _provider(missing),
            }
            break
        result["ok"].append(name)
    return result


RESULT = {"imports": check_imports(ARGS.get("modules") or []), "triton": _triton()}

if __name__ == "__main__":
    print("@@XPUFLEET-IMPORTS@@" + json.dumps(RESULT))
    sys.stdout.flush()
    sys.exit(1 if RESULT["imports"]["failed"] else 0)
