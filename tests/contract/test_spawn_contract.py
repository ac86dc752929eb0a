"""Contract with the REAL SGLang's process starts: the supervisor takes each scheduler's
rank from the spawn record (preflight.py `record_spawns`), which binds the arguments of
every `mp.Process` the server starts to its target's parameter names. This reads
sglang 0.4.3.post2's own source (PyPI, the release the fork is based on; the fork's
entrypoints/engine.py and managers/scheduler.py have the same lines) with `ast`, without
importing it (its scheduler needs CUDA-era packages): the target's signature and the
call that starts each scheduler, then records a start shaped like it."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

from xpufleet.lab.upstream_sglang import ensure_upstream_sglang
from xpufleet.launch.engines.sglang import PATTERNS
from xpufleet.launch.remote import preflight


@pytest.fixture(scope="module")
def sglang_dir() -> Path:
    python = ensure_upstream_sglang()
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; "
            "print(u.find_spec('sglang').submodule_search_locations[0])",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return Path(where.stdout.strip()) / "srt"


def function_params(path: Path, name: str) -> list[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return [a.arg for a in node.args.args]
    raise AssertionError(f"no def {name} in {path}")


def process_starts(path: Path, target: str) -> list[list[str | None]]:
    """The positional `args=(...)` of every `mp.Process(target=<target>, ...)` in a file,
    as the names passed (None for a constant, '?' for anything else)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "Process"):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        given = keywords.get("target")
        if not (isinstance(given, ast.Name) and given.id == target):
            continue
        args = keywords["args"]
        assert isinstance(args, ast.Tuple)
        found.append(
            [
                e.id if isinstance(e, ast.Name) else None if isinstance(e, ast.Constant) else "?"
                for e in args.elts
            ]
        )
    return found


def test_the_rank_is_read_from_the_argument_sglang_passes_it_in(sglang_dir: Path) -> None:
    target, param = PATTERNS.spawned_rank
    params = function_params(sglang_dir / "managers" / "scheduler.py", target)
    assert params[:6] == ["server_args", "port_args", "gpu_id", "tp_rank", "dp_rank", "pipe_writer"]
    assert param in params
    # the fork's process title, which carries no rank: why the record is needed at all
    assert (
        'setproctitle.setproctitle("sglang::scheduler")'
        in (sglang_dir / "managers" / "scheduler.py").read_text()
    )
    (start,) = process_starts(sglang_dir / "entrypoints" / "engine.py", target)
    assert start == ["server_args", "port_args", "gpu_id", "tp_rank", None, "writer"]
    # a start shaped like that one, against a function with the real parameter names:
    # the record holds the rank (and the device) under the names the supervisor reads
    namespace: dict[str, object] = {}
    exec(f"def {target}({', '.join(params)}): pass", namespace)  # noqa: S102 - names from ast
    values = {"server_args": object(), "port_args": object(), "gpu_id": 3, "tp_rank": 11}
    args = tuple(values.get(name) if name else None for name in start)  # type: ignore[arg-type]
    entry = preflight.spawn_entry(1, namespace[target], args, {})
    assert entry["args"] == {"gpu_id": 3, "tp_rank": 11}
    assert entry["target"].rsplit(".", 1)[-1] == target
