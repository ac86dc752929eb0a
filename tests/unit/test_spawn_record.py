"""The server's spawn record: the preflight wrapper notes every process the engine's
server starts with multiprocessing, with the arguments it was given, and the supervisor
ties each scheduler to its rank by it -- never by start order.

The record is made by real `multiprocessing` spawn starts (the fork's start method,
`mp.set_start_method("spawn", force=True)` in entrypoints/engine.py) of a target with
the fork's signature (managers/scheduler.py `run_scheduler_process(server_args,
port_args, gpu_id, tp_rank, dp_rank, pipe_writer)`), started out of rank order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from xpufleet.launch.remote import preflight, supervisor

FAKE_SCHEDULER = """
import sys, time

def run_scheduler_process(server_args, port_args, gpu_id, tp_rank, dp_rank, pipe_writer):
    pipe_writer.send("up")
    while True:
        time.sleep(1)

def run_detokenizer_process(server_args, port_args):
    time.sleep(3600)
"""

SERVER = """
import multiprocessing as mp, sys
sys.path[:0] = [sys.argv[1], sys.argv[2]]
import preflight, fake_scheduler

if __name__ == "__main__":
    mp.set_start_method("spawn", force=True)
    preflight.record_spawns(sys.argv[3])
    started = []
    for tp_rank in (5, 4):  # out of rank order: start order says nothing here
        reader, writer = mp.Pipe(duplex=False)
        proc = mp.Process(
            target=fake_scheduler.run_scheduler_process,
            args=({"tp": 8}, None, tp_rank % 2, tp_rank, None, writer),
        )
        proc.start()
        assert reader.recv() == "up"
        started.append(proc)
    detok = mp.Process(target=fake_scheduler.run_detokenizer_process, args=({}, None))
    detok.start()
    print(" ".join(str(p.pid) for p in [*started, detok]), flush=True)
    sys.stdin.read()
    for proc in [*started, detok]:
        proc.kill()
        proc.join()
"""


def test_the_record_names_each_scheduler_by_the_rank_it_was_started_for(tmp_path: Path) -> None:
    (tmp_path / "fake_scheduler.py").write_text(FAKE_SCHEDULER)
    (tmp_path / "server.py").write_text(textwrap.dedent(SERVER))
    record = tmp_path / "spawned.jsonl"
    remote = str(Path(preflight.__file__).parent)
    server = subprocess.Popen(
        [sys.executable, str(tmp_path / "server.py"), str(tmp_path), remote, str(record)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        first, second, detok = (int(p) for p in server.stdout.readline().split())
        entries = supervisor.read_spawn_record(record)
        assert [e["pid"] for e in entries] == [first, second, detok]
        assert entries[0]["target"] == "fake_scheduler.run_scheduler_process"
        # the integer arguments by the fork's parameter names; None and objects left out
        assert entries[0]["args"] == {"gpu_id": 1, "tp_rank": 5}
        assert entries[2]["args"] == {}
        mapping = supervisor.ranks_by_spawn_record(
            entries, [first, second], [4, 5], "run_scheduler_process", "tp_rank"
        )
        # the first started is rank 5: start order would have called it rank 4
        assert mapping == {5: first, 4: second}
    finally:
        server.communicate("", timeout=60)
    assert server.returncode == 0


def _entry(pid: int, rank: int | None, target: str = "sglang.srt.managers.x.run_scheduler_process"):
    return {"pid": pid, "start": 1, "target": target, "args": {"tp_rank": rank, "gpu_id": 0}}


def test_the_record_must_name_every_scheduler_with_its_own_planned_rank() -> None:
    by = supervisor.ranks_by_spawn_record
    full = [_entry(20, 1), _entry(10, 0), _entry(30, 9, target="m.run_detokenizer_process")]
    assert by(full, [10, 20], [0, 1], "run_scheduler_process", "tp_rank") == {0: 10, 1: 20}
    # one scheduler not recorded (yet): no answer, not a guess
    assert by(full[:1], [10, 20], [0, 1], "run_scheduler_process", "tp_rank") is None
    # two processes recorded with one rank, or a rank the plan does not have here
    assert (
        by([_entry(10, 0), _entry(20, 0)], [10, 20], [0, 1], "run_scheduler_process", "tp_rank")
        is None
    )
    assert (
        by([_entry(10, 0), _entry(20, 7)], [10, 20], [0, 1], "run_scheduler_process", "tp_rank")
        is None
    )
    # another target's argument of the same name is not a rank
    other = [_entry(10, 0, "m.run_data_parallel_controller_process"), _entry(20, 1)]
    assert by(other, [10, 20], [0, 1], "run_scheduler_process", "tp_rank") is None


def test_a_cut_line_and_a_reused_pid_are_not_read(tmp_path: Path) -> None:
    me = os.getpid()
    ticks = supervisor.start_ticks(me)
    record = tmp_path / "spawned.jsonl"
    lines = [
        json.dumps({"pid": me, "start": ticks, "target": "m.f", "args": {"tp_rank": 0}}),
        json.dumps({"pid": me, "start": (ticks or 0) + 1, "target": "m.f", "args": {}}),
        '{"pid": 12',  # the server died mid-write
    ]
    record.write_text("\n".join(lines) + "\n")
    assert [e["start"] for e in supervisor.read_spawn_record(record)] == [ticks]
    assert supervisor.read_spawn_record(tmp_path / "absent.jsonl") == []


def test_each_rank_must_work_on_the_card_the_plan_gives_it() -> None:
    usage = {10: {2: 100}, 11: {2: 100}, 12: {1: 100, 3: 5}}
    # FLAT: ranks 0 and 1 on the two tiles of card 2 look alike to xpu-smi ps (cards only)
    assert supervisor.device_mismatches({0: 10, 1: 11, 2: 12}, usage, {0: 2, 1: 2, 2: 1}) == (
        True,
        None,
    )
    seen, problem = supervisor.device_mismatches({0: 10, 1: 11, 2: 12}, usage, {0: 2, 1: 2, 2: 3})
    assert seen and problem == "rank 2 (pid 12) works on device 1, the plan puts it on device 3"
    # not judged while a rank's process shows on no card yet
    assert supervisor.device_mismatches({0: 10, 1: 99}, usage, {0: 2, 1: 2}) == (False, None)
