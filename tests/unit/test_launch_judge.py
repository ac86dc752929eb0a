"""Launch without SSH: rendering the run directory, judging preflight reports, naming
the first death, and the node scripts' pure helpers."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from xpufleet.errors import PlanError
from xpufleet.host import Host
from xpufleet.launch import judge
from xpufleet.launch.engines.sglang import PATTERNS as SGLANG_PATTERNS
from xpufleet.launch.plan import plan_launch
from xpufleet.launch.remote import supervisor
from xpufleet.launch.render import bundle, new_run_id, node_config, render_launch_script
from xpufleet.results import FAIL, PASS, SKIP

SG = supervisor.Patterns(SGLANG_PATTERNS.to_json())


def lab_plan(nodes: int = 2, tp: int = 8, **extra: object):
    hosts = [
        Host(
            f"node{i}",
            f"127.0.9.{i}",
            vars={
                "nic": "lo",
                "device": "cpu",
                "dist_backend": "gloo",
                "model_size_gb": 0.01,
                **extra,
            },
        )
        for i in range(1, nodes + 1)
    ]
    return plan_launch(hosts, tp, nodes)


def rank_report(rank: int, ok: bool = True, **fields: object) -> dict:
    return {"rank": rank, "joined": ok, "ok": ok, "stage": "done" if ok else "connect", **fields}


# -- rendering ---------------------------------------------------------------------------
def test_launch_script_quotes_every_value_and_hands_the_preflight_the_plans_argv(
    tmp_path: Path,
) -> None:
    plan = lab_plan(ccl_env={"EVIL": "$(touch /tmp/pwned) ; rm -rf /"})
    node = plan.nodes[1]
    script = render_launch_script(plan, node, "run1", "/opt/xpufleet/env/sglang.sh")
    assert "export EVIL='$(touch /tmp/pwned) ; rm -rf /'" in script
    last = script.rstrip().splitlines()[-1]
    assert last.startswith("exec /opt/xpufleet/venv/bin/python /var/lib/xpufleet/runs/run1/")
    # the script, run with printf for python, shows exactly the argv it would exec
    fake = tmp_path / "launch.sh"
    fake.write_text(script.replace("exec /opt/xpufleet/venv/bin/python", "exec printf '%s\\n'"))
    out = subprocess.run(["bash", str(fake)], capture_output=True, text=True, check=True)
    argv = out.stdout.splitlines()
    assert argv[:2] == [
        "/var/lib/xpufleet/runs/run1/preflight.py",
        "/var/lib/xpufleet/runs/run1/run.json",
    ]
    assert argv[2:] == ["--then", *node.argv[1:]]
    assert node.argv[1:3] == ("-m", "sglang.launch_server")
    assert not Path("/tmp/pwned").exists()


def test_bad_environment_name_is_refused() -> None:
    plan = lab_plan(ccl_env={"BAD NAME": "x"})
    with pytest.raises(PlanError, match="not an environment variable name"):
        render_launch_script(plan, plan.nodes[0], "run1", "/env.sh")


def test_node_config_has_the_ports_and_the_preflight_topology() -> None:
    plan = lab_plan(nodes=2)
    head, other = (node_config(plan, n, "r1") for n in plan.nodes)
    assert {(p["what"], p["port"]) for p in head["ports"]} == {
        ("SGLang HTTP", 30000),
        ("rendezvous", 29500),
        ("supervisor hub", 29510),
    }
    assert [p["what"] for p in other["ports"]] == ["SGLang HTTP"]
    assert other["preflight"]["world_size"] == 8
    assert [r["rank"] for r in other["preflight"]["ranks"]] == [4, 5, 6, 7]
    assert other["preflight"]["ranks"][2]["env"] == {"CCL_LOCAL_RANK": "2", "CCL_LOCAL_SIZE": "4"}
    assert other["preflight"]["ranks"][2]["device"] == 2
    assert other["hub"] == {"address": "127.0.9.1", "port": 29510}


def test_bundle_holds_the_run_directory() -> None:
    plan = lab_plan()
    data = bundle(plan, plan.nodes[0], "r1", "/env.sh")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = set(tar.getnames())
        assert tar.getmember("launch.sh").mode == 0o755
        run = json.load(tar.extractfile("run.json"))  # type: ignore[arg-type]
    assert names == {"run.json", "plan.json", "launch.sh", "supervisor.py", "preflight.py"}
    assert run["run_id"] == "r1"


def test_run_ids_sort_by_time() -> None:
    assert new_run_id(1_700_000_000) < new_run_id(1_700_000_100)


# -- preflight judgement -----------------------------------------------------------------
def test_good_preflight_passes_with_bandwidth() -> None:
    plan = lab_plan()
    timings = [{"bytes": 4096, "time_us": 100.0, "algbw_gbps": 0.04, "busbw_gbps": 0.07}]
    reports = {
        "node1": {"ranks": [rank_report(0, timings=timings)] + [rank_report(r) for r in (1, 2, 3)]},
        "node2": {"ranks": [rank_report(r) for r in (4, 5, 6, 7)]},
    }
    verdict = judge.judge_preflight(plan, reports, {})
    assert verdict.ok
    assert verdict.cluster.status == PASS
    assert "4 KiB 100 us busbw 0.070 GB/s" in verdict.cluster.message
    assert {r.status for r in verdict.hosts.values()} == {PASS}


def test_blocked_port_names_the_rendezvous_node_and_the_ranks_that_never_joined() -> None:
    plan = lab_plan()
    dropped = {"kind": "timeout", "error": "cannot reach the rendezvous store: timed out"}
    aborted = {"kind": "aborted", "error": "stopped: aborted by the control node"}
    reports = {
        "node1": {"ranks": [rank_report(r, False, **aborted) for r in (0, 1, 2, 3)]},
        "node2": {"ranks": [rank_report(r, False, **dropped) for r in (4, 5, 6, 7)]},
    }
    verdict = judge.judge_preflight(plan, reports, {})
    assert not verdict.ok
    assert verdict.never_joined == list(range(8))
    message = verdict.cluster.message
    assert "node1 ranks 0-3, node2 ranks 4-7 never joined" in message
    assert "blocking port 29500 on node1" in message
    assert verdict.cluster.runbook == "docs/runbooks/launch.md#rendezvous-timeout"
    assert verdict.hosts["node2"].status == FAIL


def test_refused_store_and_missing_ranks_reported_by_rank0() -> None:
    plan = lab_plan()
    refused = {"kind": "refused", "error": "Connection refused"}
    reports = {
        "node1": {
            "ranks": [
                rank_report(
                    0, False, joined=True, stage="join", kind="timeout", missing_ranks=[4, 5]
                )
            ]
            + [rank_report(r) for r in (1, 2, 3)]
        },
        "node2": {"ranks": [rank_report(r, False, **refused) for r in (4, 5)]},
    }
    verdict = judge.judge_preflight(plan, reports, {})
    assert verdict.never_joined == [4, 5, 6, 7]  # 6 and 7 never even reported
    assert "nothing listens at 127.0.9.1:29500" in verdict.cluster.message


def test_port_in_use_on_rank0_points_at_the_port_runbook() -> None:
    plan = lab_plan()
    reports = {
        "node1": {"ranks": [rank_report(0, False, kind="addrinuse", error="address in use")]},
        "node2": None,
    }
    verdict = judge.judge_preflight(plan, reports, {"node2": "connection refused"})
    assert "already in use" in verdict.cluster.message
    assert verdict.cluster.runbook == judge.RUNBOOK_PORT
    assert "preflight did not run" in verdict.hosts["node2"].message


# -- deaths and status rows --------------------------------------------------------------
def test_first_death_is_the_earliest_across_nodes() -> None:
    statuses = {
        "node1": {"first_death": {"host": "node1", "rank": 0, "died_at": 12.5}},
        "node2": None,
        "node3": {"first_death": {"host": "node3", "rank": 5, "died_at": 12.1}},
        "node4": {"first_death": None},
    }
    assert judge.first_death(statuses)["rank"] == 5
    assert judge.first_death({"node1": {}}) is None


def test_death_result_names_rank_exit_and_last_line_and_spots_oom() -> None:
    death = {
        "host": "node3",
        "rank": 5,
        "pid": 42,
        "what": "rank 5",
        "exit": supervisor.describe_status(signal.SIGKILL),
        "tail": ["[2025-01-01 00:00:00 TP5] RuntimeError: XPU out of memory"],
    }
    result = judge.death_result(death)
    assert "rank 5 on node3 (pid 42) killed by SIGKILL (exit code -9)" in result.message
    assert "XPU out of memory" in result.message
    assert result.runbook == judge.RUNBOOK_OOM
    death["tail"] = ["segfault"]
    assert judge.death_result(death).runbook == judge.RUNBOOK_RANK_CRASH


def test_rank_rows_tell_a_crash_from_a_rank_xpufleet_stopped() -> None:
    status = {
        "ranks": [
            {"rank": 0, "pid": 1, "alive": True, "uptime_s": 75},
            {"rank": 1, "pid": 2, "alive": False, "cause": "stopped", "exit": {"text": "t"}},
            {"rank": 2, "pid": 3, "alive": False, "cause": "died", "exit": {"text": "code 1"}},
        ]
    }
    rows = judge.rank_results(status, ready=True)
    assert [r.status for r in rows] == [PASS, SKIP, FAIL]
    assert rows[0].message == "running, pid 1, up 1m15s, ready"


def test_spans_and_sizes() -> None:
    assert judge.spans([7, 0, 1, 2, 5]) == "0-2,5,7"
    assert judge.human_bytes(4 << 20) == "4 MiB"


# -- node script helpers -----------------------------------------------------------------
def test_log_lines_are_tagged_by_rank_with_tracebacks_kept_together() -> None:
    text = Path(__file__).parents[1] / "fixtures"
    sample = (text / "14e_sglang_startup_TP0_then_warmup_failure_issue2468.txt").read_text()
    tags = supervisor.tag_lines(sample.splitlines(), SG.log_prefix)
    assert tags[0][0] == "0"  # [2024-12-13 01:44:59 TP0] Load weight end.
    traceback = [tag for tag, line in tags if line.startswith("  File ")]
    assert traceback == ["main"]  # belongs to "[...] Initialization failed. warmup error"
    multi = text / "14c_sglang_multinode_TP16_init_torch_distributed_PARTIAL_issue2892.txt"
    assert {
        tag for tag, _ in supervisor.tag_lines(multi.read_text().splitlines(), SG.log_prefix)
    } == {
        "2",
        "5",
        "6",
        "9",
    }


def test_exit_statuses_read_like_waitpid() -> None:
    assert supervisor.describe_status(signal.SIGKILL)["text"] == "killed by SIGKILL (exit code -9)"
    assert supervisor.describe_status(3 << 8) == {
        "code": 3,
        "signal": None,
        "text": "exited with code 3",
    }
    assert supervisor.describe_status(None)["code"] is None
    reaped = supervisor.describe_status(None, (41, "raylet"))
    assert reaped["text"] == "exit status unknown (reaped by its parent raylet (pid 41))"


def test_the_parent_of_a_grandchild_is_named_for_when_it_reaps_it() -> None:
    """A Ray worker's exit status is its raylet's to read: the supervisor names that
    parent (recorded while the worker runs) instead of saying only "unknown"."""
    shell = subprocess.Popen(["bash", "-c", "sleep 30 & wait"])
    try:
        for _ in range(200):
            children = supervisor.children_of(shell.pid)
            if children and supervisor.process_name(children[0]).startswith("sleep"):
                break
            time.sleep(0.02)
        assert supervisor.parent_of(children[0]) == (shell.pid, "bash")
        assert supervisor.parent_of(2**22 + 7) is None  # no such process
    finally:
        subprocess.run(["pkill", "-P", str(shell.pid)], check=False)
        shell.kill()
        shell.wait()


def test_zombie_exit_status_comes_from_proc() -> None:
    proc = subprocess.Popen(["sleep", "30"])
    os.kill(proc.pid, signal.SIGKILL)
    try:
        deadline = 50
        while supervisor.zombie_status(proc.pid) is None and deadline:
            deadline -= 1
            os.sched_yield()
            time.sleep(0.02)
        assert supervisor.describe_status(supervisor.zombie_status(proc.pid))["signal"] == "SIGKILL"
    finally:
        proc.wait()


def test_port_holders_find_the_listening_process() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        holders = supervisor.port_holders("127.0.0.1", port)
        assert [h["pid"] for h in holders] == [os.getpid()]
    assert supervisor.port_holders("127.0.0.1", port) == []


def test_ranks_are_told_apart_by_title_spawn_order_and_log_prefix() -> None:
    assert SG.rank_title.search("sglang::scheduler_DP0_TP3 ").group(1) == "3"
    assert SG.rank_title.search("sglang::scheduler") is None
    assert SG.rank_title.search("python -m sglang.launch_server --model /m/TP16") is None
    tracker = (
        11,
        ["python3", "python3 -c from multiprocessing.resource_tracker import main;main(6)"],
        100.0,
    )
    sched = lambda pid, t: (pid, ["sglang::schedul", "sglang::scheduler"], t)  # noqa: E731
    detok = (40, ["sglang::detoken", "sglang::detokenizer"], 102.0)
    children = [detok, sched(30, 101.0), tracker, sched(20, 100.5)]
    found, helpers, waiting = supervisor.assign_ranks(children, [4, 5], {"4", "5"}, SG)
    # the tracker started first but is no rank; schedulers in the fork's spawn order
    assert (found, waiting) == ({4: 20, 5: 30}, None)
    assert helpers == {11: "resource tracker", 40: "detokenizer"}
    # not before every rank logged with its TP prefix, nor while a child is untitled
    assert supervisor.assign_ranks(children, [4, 5], {"4"}, SG)[2] == "no TP5 log lines yet"
    starting = (50, ["python3", "python3 -c from multiprocessing.spawn import spawn_main"], 99.0)
    assert supervisor.assign_ranks([*children, starting], [4, 5], {"4", "5"}, SG)[0] == {}
    assert supervisor.assign_ranks(children[:2], [4, 5], {"4", "5"}, SG)[0] == {}
    # a title with the index (later upstream) names the rank directly
    indexed = [(60, ["sglang::scheduler_TP5"], 200.0), (61, ["sglang::scheduler_TP4"], 201.0)]
    assert supervisor.assign_ranks(indexed, [4, 5], set(), SG)[0] == {5: 60, 4: 61}


# -- ranks by device (xpu-smi ps) ---------------------------------------------------------
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def _fixture(prefix: str) -> str:
    (path,) = [p for p in FIXTURES.glob(f"{prefix}_*") if not p.name.endswith(".source.txt")]
    return path.read_text()


def test_xpu_smi_ps_gives_each_process_its_devices_both_layouts() -> None:
    new = supervisor.parse_xpu_smi_ps(_fixture("16a"))
    # a scheduler mapping a little memory elsewhere still works on the card it fills
    assert new[48213] == {0: 58212352, 1: 65536}
    assert supervisor.device_of(new[48213]) == 0 and supervisor.device_of(new[48214]) == 1
    assert set(new[48311]) == {0, 1, 2, 3}  # xpu-smi itself, on every card
    old = supervisor.parse_xpu_smi_ps(_fixture("16b"))
    assert old == {768707: {0: 5726404}, 5225: {0: 1507}, 4615: {0: 17238523}}
    assert supervisor.device_of({}) is None and supervisor.device_of({0: 5, 1: 5}) is None
    for bad in ('{"error": "device not found", "errno": 1}', "[]", '{"x": []}'):
        with pytest.raises(ValueError):
            supervisor.parse_xpu_smi_ps(bad)


def test_ranks_follow_the_card_each_scheduler_works_on_not_the_spawn_order() -> None:
    usage = supervisor.parse_xpu_smi_ps(_fixture("16a"))
    # the plan puts rank 4 on card 1 and rank 5 on card 0: 48213 (spawned first) is rank 5
    mapping, how, problem = supervisor.ranks_by_device([48213, 48214], usage, {4: 1, 5: 0})
    assert (mapping, problem) == ({5: 48213, 4: 48214}, None)
    assert how == "the device each rank process works on (xpu-smi ps)"
    # FLAT: two tiles of one card; xpu-smi ps tells cards apart, tiles by spawn order
    shared = {10: {2: 100}, 11: {2: 100}, 12: {3: 100}}
    mapping, how, _ = supervisor.ranks_by_device([10, 11, 12], shared, {0: 2, 1: 2, 2: 3})
    assert mapping == {0: 10, 1: 11, 2: 12} and "tiles of one card in spawn order" in str(how)
    # not decided while a scheduler shows on no device yet
    assert supervisor.ranks_by_device([48213, 999], usage, {4: 0, 5: 1}) == (None, None, None)
    # a scheduler on a card the plan gave no rank: named, with the card its rank lacks
    mapping, _, problem = supervisor.ranks_by_device([48213, 48214], usage, {4: 0, 5: 3})
    assert mapping is None
    assert problem == (
        "device 1: the plan puts no rank there, xpu-smi ps shows scheduler pid(s) 48214; "
        "device 3: the plan puts rank(s) 5 there, xpu-smi ps shows scheduler pid(s) none"
    )


def test_the_plan_gives_each_rank_its_card_after_the_device_mask() -> None:
    flat = lab_plan(nodes=2, device_ids=[6, 4, 2, 0])
    ranks = flat.nodes[1].ranks
    assert [(r.device, r.physical_device, r.card) for r in ranks] == [
        (0, 6, 3),
        (1, 4, 2),
        (2, 2, 1),
        (3, 0, 0),
    ]
    cfg = node_config(flat, flat.nodes[1], "r1")
    assert cfg["rank_devices"][0] == {"rank": 4, "device": 0, "card": 3}
    composite = lab_plan(nodes=2, device_hierarchy="COMPOSITE", cards=4, tiles=8)
    assert [r.card for r in composite.nodes[0].ranks] == [0, 1, 2, 3]


def test_status_rows_name_helpers_and_how_ranks_were_identified() -> None:
    status = {
        "identified_by": "the device each rank process works on (xpu-smi ps)",
        "helpers": [
            {"pid": 7, "role": "resource tracker", "alive": True, "uptime_s": 61},
            {"pid": 9, "role": "detokenizer", "alive": False, "exit": {"text": "exited 0"}},
        ],
    }
    rows = judge.helper_results(status) + judge.device_results(status)
    assert [(r.id, r.status) for r in rows] == [
        ("status.helper.resource_tracker", "ok"),
        ("status.helper.detokenizer", SKIP),
        ("status.ranks", "ok"),
    ]
    assert rows[0].message == "resource tracker (helper, not a rank): running, pid 7, up 1m01s"
    assert rows[2].message == "ranks by the device each rank process works on (xpu-smi ps)"
    wrong = judge.device_results({"identified_by": "rank by spawn order", "device_problem": "x"})
    assert [(r.id, r.status) for r in wrong] == [("status.devices", FAIL)]
    assert wrong[0].runbook and wrong[0].runbook.endswith("#rank-on-the-wrong-device")


def test_a_recorded_process_is_told_by_its_start_ticks_not_the_wall_clock(monkeypatch) -> None:
    """A rank is alive while its pid runs with the start it was recorded with; the
    wall-clock start moves with /proc/stat's btime (a stepped clock), the ticks do not."""
    me = os.getpid()
    entry = {"start_ticks": supervisor.start_ticks(me), "started_at": supervisor.start_time(me)}
    monkeypatch.setattr(supervisor, "boot_time", lambda: 12345.0)  # the clock was stepped
    assert supervisor.still_running(me, entry)
    assert not supervisor.still_running(me, {**entry, "start_ticks": entry["start_ticks"] - 1})
    assert not supervisor.still_running(2**22 + 7, entry)


def test_ray_workers_take_the_rank_they_log_in_their_own_output(tmp_path: Path) -> None:
    """Which Ray worker process holds which vLLM rank is Ray's choice: the rank comes from
    the line vLLM writes to each worker's own stdout file, whatever their start order; a
    worker whose output is not a file of its own (a pipe) tells nothing."""
    from xpufleet.launch.engines.vllm import PATTERNS as VLLM_PATTERNS

    line = supervisor.Patterns(VLLM_PATTERNS.to_json()).rank_line
    assert line is not None
    text = (
        "(Worker pid=9) INFO 12-03 18:58:24 [parallel_state.py:1906] world_size=4 rank={} "
        "local_rank=1 distributed_init_method=tcp://127.192.1.1:33433 backend=gloo"
    )
    procs = []
    try:
        for rank in (3, 2):  # started first: rank 3
            out = (tmp_path / f"worker-{rank}.out").open("w")
            procs.append(
                subprocess.Popen(
                    ["sh", "-c", f"echo '{text.format(rank)}'; exec sleep 30"], stdout=out
                )  # fmt: skip
            )
        piped = subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE)
        procs.append(piped)
        pids = [p.pid for p in procs[:2]]
        for _ in range(200):
            if all(supervisor.logged_rank(pid, line) is not None for pid in pids):
                break
            time.sleep(0.02)
        assert supervisor.ranks_by_own_log(pids, [2, 3], line) == {3: pids[0], 2: pids[1]}
        assert supervisor.ranks_by_own_log(pids, [0, 1], line) == {}  # not the plan's ranks
        assert supervisor.logged_rank(piped.pid, line) is None
        assert supervisor.ranks_by_own_log([*pids, piped.pid], [1, 2, 3], line) == {}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
