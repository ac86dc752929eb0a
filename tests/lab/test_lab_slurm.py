"""The Slurm connector on the lab's real Slurm (Debian's slurmctld/slurmd/munge 22.05).

The lab's Slurm is started once for this module (about a second on top of the session
lab) and stopped at its end, also after failures. Each slurmd runs inside its node's
namespaces, so a task sees the node's hostname, its own /opt/intel and the PATH its
sshd gives: doctor over `srun` must find exactly what doctor over SSH finds, faults
included, with ONE srun step for all nodes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from xpufleet.errors import CommandFailed, UnreachableError
from xpufleet.inventory import load_inventory
from xpufleet.lab import Lab, pid_alive
from xpufleet.lab.slurm import available
from xpufleet.lab.standin import SOURCE_DIR
from xpufleet.slurm import SlurmSession

#: the invoke of the venv running the tests
INVOKE = str(Path(sys.executable).parent / "invoke")

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(not available(), reason="Slurm not installed (make setup installs it)"),
]

FAULTY = "node3"


@pytest.fixture(scope="module")
def slurm_lab(lab: Lab) -> Iterator[Lab]:
    """The session lab with its Slurm running (stopped when the module ends)."""
    try:
        lab.up(nodes=4, slurm=True)
        yield lab
    finally:
        lab.stop_slurm()
        assert not lab.slurm.daemons(), "a Slurm daemon of the lab survived stop_slurm"


def _client(lab: Lab, argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, env=lab.slurm.client_env(), timeout=300, **kwargs
    )


@pytest.fixture(scope="module")
def allocation(slurm_lab: Lab) -> Iterator[str]:
    """ONE 4-node allocation without a shell (salloc --no-shell) for the module's tests,
    cancelled at its end. It holds one CPU per node (cons_tres, CR_Core): a batch job
    still fits beside it."""
    proc = _client(slurm_lab, ["salloc", "-N4", "--no-shell", "--job-name=xpufleet-test"])
    match = re.search(r"Granted job allocation (\d+)", proc.stderr)
    assert match, proc.stderr
    job = match.group(1)
    try:
        yield job
    finally:
        _client(slurm_lab, ["scancel", job])


def _inventory_for_job(lab: Lab, directory: Path, job: str, **variables: Any) -> Path:
    doc = yaml.safe_load(lab.slurm_inventory_path.read_text())
    doc["job"] = job
    doc["vars"].update(variables)
    path = directory / "inventory-slurm.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _listed_inventory(
    lab: Lab, directory: Path, job: str, names: list[str], **variables: Any
) -> Path:
    """A plain YAML inventory of the job's nodes as slurm hosts, in the order given (the
    plugin lists them as Slurm does)."""
    plugin = yaml.safe_load(lab.slurm_inventory_path.read_text())
    all_vars = {**plugin["vars"], "slurm_job": job, "slurm_conf": plugin["slurm_conf"]}
    hosts = {}
    for name in names:
        address = lab.node_address(int(name[4:]))
        hosts[name] = {"ansible_host": address, "sglang_host": address}
    doc = {"all": {"vars": {**all_vars, **variables}, "children": {"gpu_nodes": {"hosts": hosts}}}}
    path = directory / "inventory-listed.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_tasks_run_inside_their_node(allocation: str, slurm_lab: Lab, tmp_path: Path) -> None:
    """Each host's command runs on its own node (hostname, /opt/intel, tools on PATH), with
    stdin, exit status and streamed stdout as over SSH."""
    inventory = load_inventory(_inventory_for_job(slurm_lab, tmp_path, allocation))
    hosts = inventory.select(None)
    assert [h.name for h in hosts] == ["node1", "node2", "node3", "node4"]
    options = slurm_lab.ssh_options()
    for host in hosts:
        session = SlurmSession(host, options)
        result = session.run(
            "hostname; cat /opt/intel/.lab/node.json; command -v xpu-smi; cat",
            stdin="from stdin\n",
        )
        lines = result.stdout.splitlines()
        assert lines[0] == host.name
        assert json.loads("".join(lines[1:-2]))["node"] == host.name
        assert lines[-2] == str(slurm_lab.node_dir(int(host.name[4:])) / "bin" / "xpu-smi")
        assert lines[-1] == "from stdin"
    session = SlurmSession(hosts[1], options)
    failed = session.run("echo out; echo err >&2; exit 7", check=False)
    assert (failed.exit_status, failed.stdout, failed.stderr) == (7, "out\n", "err\n")
    with pytest.raises(CommandFailed):
        session.run("exit 3")
    chunks: list[bytes] = []
    session.run("head -c 3000000 /dev/zero", stdout_to=chunks.append)
    assert sum(len(c) for c in chunks) == 3_000_000


def test_a_node_outside_the_allocation_is_named(allocation: str, slurm_lab: Lab) -> None:
    inventory = load_inventory(slurm_lab.slurm_inventory_path.parent / "inventory.yaml")
    stranger = inventory.select("node1")[0]
    vars_ = {**stranger.vars, "connector": "slurm", "slurm_job": allocation,
             "slurm_conf": str(slurm_lab.slurm.conf)}  # fmt: skip
    bad = replace(stranger, name="node9", vars=vars_)
    with pytest.raises(UnreachableError) as caught:
        SlurmSession(bad, slurm_lab.ssh_options()).run("true")
    assert caught.value.host == "node9"


def test_inventory_from_the_allocation(slurm_lab: Lab) -> None:
    """Inside `salloc -N2`, the plugin: slurm inventory holds the allocation's nodes, with
    their Slurm NodeAddr as address; outside any allocation it is refused (exit 2)."""
    proc = _client(
        slurm_lab,
        ["salloc", "-N2", INVOKE, "inventory", "--hosts", str(slurm_lab.slurm_inventory_path),
         "--json"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    hostvars = doc["_meta"]["hostvars"]
    assert len(hostvars) == 2  # which two is Slurm's choice (the module holds an allocation)
    assert doc["gpu_nodes"]["hosts"] == sorted(hostvars, key=lambda n: int(n[4:]))
    job = re.search(r"Granted job allocation (\d+)", proc.stderr)
    assert job
    for name, values in hostvars.items():
        assert values["ansible_host"] == slurm_lab.node_address(int(name[4:]))
        assert values["connector"] == "slurm"
        assert values["slurm_job"] == job.group(1)
    outside = _client(
        slurm_lab, [INVOKE, "inventory", "--hosts", str(slurm_lab.slurm_inventory_path)]
    )
    assert outside.returncode == 2
    assert "no Slurm allocation" in outside.stderr


def _next_step_id(lab: Lab, job: str) -> int:
    """The id this (one-task) step got: the steps the job made before it, counted."""
    step = _client(
        lab,
        ["srun", f"--jobid={job}", "-N1", "-n1", "--overlap", "/bin/sh", "-c",
         "echo $SLURM_STEPID"],
    )  # fmt: skip
    assert step.returncode == 0, step.stderr
    return int(step.stdout.strip())


def _failing(report: dict[str, Any]) -> dict[str, set[str]]:
    return {
        name: {r["id"] for r in host["results"] if r["status"] in ("fail", "warn")}
        for name, host in report["hosts"].items()
    }


@pytest.mark.parametrize("connector", ["ssh", "slurm"])
def test_doctor_over_each_connector(
    connector: str, allocation: str, slurm_lab: Lab, tmp_path: Path
) -> None:
    """The same doctor over SSH and over srun: a node whose clock is skewed (libfaketime,
    set by its sshd, and for tasks by the lab's TaskProlog from the same line) is named,
    on that node only; over Slurm all four nodes are probed in ONE srun step."""
    if connector == "slurm":
        inventory = _inventory_for_job(slurm_lab, tmp_path, allocation)
        before = _next_step_id(slurm_lab, allocation)
    else:
        inventory = slurm_lab.inventory_path
    with slurm_lab.fault(FAULTY, "clock_skew"):
        proc = _client(slurm_lab, [INVOKE, "doctor", "--hosts", str(inventory), "--json"])
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    failing = _failing(report)
    assert sorted(failing) == ["node1", "node2", "node3", "node4"]
    assert "clock.offset" in failing[FAULTY]
    for name in ("node1", "node2", "node4"):
        assert "clock.offset" not in failing[name]
        assert failing[name] == failing["node1"]
    assert failing[FAULTY] - failing["node1"] == {"clock.offset"}
    if connector == "slurm":
        # a job numbers its steps 0, 1, ...: one step between the two counting steps
        assert _next_step_id(slurm_lab, allocation) == before + 2


def test_provision_over_slurm_relays_each_wheel_once_and_names_a_failing_node(
    provisioned_lab: Lab, slurm_lab: Lab, allocation: str, tmp_path: Path
) -> None:
    """provision through srun steps, wheels through the relay whose members are srun
    steps (nodes link over TCP): the control node sends the wheel ONCE for the nodes.
    node4's wheel cache is a file in the way: node4 is named, the others go on (their
    relay does not wait for it). Cleared, the rerun sends the wheel to node4 only; the
    third run changes nothing and sends nothing. On the session's provisioned lab (the
    venv and its lock are shared with the launch tests) with a fresh state_dir (each
    node has its own): the wheel is pushed again whatever ran before."""
    from xpufleet.lab.wheelhouse import standin_wheelhouse
    from xpufleet.provision import ProvisionOptions, run_provision
    from xpufleet.provision.manifest import load_manifest

    wheels = tmp_path / "wheels"
    standin_wheelhouse(wheels)  # the stand-in and its lock: the nodes are offline
    (wheel,) = load_manifest(wheels / "manifest.json").wheels
    state = f"/var/lib/xpufleet/slurm-{os.getpid()}-{tmp_path.name[-12:]}"
    inventory = _inventory_for_job(slurm_lab, tmp_path, allocation, state_dir=state)
    hosts = load_inventory(inventory).select(None)
    options = slurm_lab.ssh_options(command_timeout=300.0)
    node4 = SlurmSession(hosts[3], options)

    def provision() -> Any:
        return run_provision(hosts, options, wheels, forks=4, options=ProvisionOptions())

    def results(report: Any, status: str) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for name, host in report.hosts.items():
            for r in host.results:
                if r.status == status:
                    found.setdefault(name, {})[r.id] = r.message
        return found

    try:
        node4.run(f"mkdir -p {state} && echo in the way > {state}/wheels")
        first = provision()
        assert first.exit_code() != 0 and sorted(results(first, "failed")) == ["node4"]
        for node in ("node1", "node2", "node3"):
            changed = results(first, "changed")[node]
            (pushed,) = [m for i, m in changed.items() if i.endswith(f".{wheel.key}")]
            assert "relayed from" in pushed and "3 node(s), one copy sent" in pushed, pushed
        assert first.extra["bytes_sent"] == wheel.size  # the venv's lock was already there
        node4.run(f"rm -f {state}/wheels")
        second = provision()
        assert second.exit_code() == 0, results(second, "failed")
        assert second.extra["bytes_sent"] == wheel.size
        assert sorted(results(second, "changed")) == ["node4"]
        third = provision()
        assert third.exit_code() == 0 and third.extra["bytes_sent"] == 0
        assert results(third, "changed") == {}
    finally:
        for host in hosts:
            SlurmSession(host, options).run(f"rm -rf {state}", check=False)


def _launch_steps(lab: Lab, job: str) -> list[str]:
    out = _client(lab, ["squeue", "-h", "-s", f"--jobs={job}", "-o", "%i %j"]).stdout
    return [line for line in out.splitlines() if "xpufleet-launch-" in line]


def _wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_launch_is_one_srun_step_that_dies_with_a_rank(
    provisioned_lab: Lab,
    slurm_lab: Lab,
    allocation: str,
    tmp_path: Path,
    follow_then_interrupt: Any,
) -> None:
    """launch --tp 8 --nnodes 2 over Slurm: one `srun -K` step runs both supervisors, the
    OpenAI API answers; a killed rank ends the whole step (srun's -K) and the first death
    is read from the tasks (rank 5, SIGKILL), not from srun's exit status; `stop` leaves
    no step behind. Node ranks follow SLURM_NODEID: the inventory lists node2 first, but
    srun numbers the step's nodes in Slurm's node table order (22.05: natural name order,
    read_config.c _sort_node_record_table_ptr), so node1 is node rank 0 (it serves HTTP,
    ranks 0-3) and rank 5 runs on node2. Ports derive from the lab's: labs never share."""
    sys.path.insert(0, str(SOURCE_DIR))
    import openai
    from sglang.srt.model import apply_chat_template, reference_completion

    base = slurm_lab.port + 2100
    inventory = _listed_inventory(
        slurm_lab, tmp_path, allocation, ["node2", "node1", "node3", "node4"],
        rendezvous_port=base, supervisor_port=base + 10, sglang_port=base + 20,
        ready_timeout=240,
    )  # fmt: skip

    def invoke(*args: str) -> tuple[int, dict[str, Any]]:
        proc = _client(slurm_lab, [INVOKE, *args, "--hosts", str(inventory), "--json"])
        doc = json.loads(proc.stdout) if proc.stdout.strip() else {}
        doc.setdefault("stderr", proc.stderr)
        return proc.returncode, doc

    try:
        code, doc = invoke("launch", "--tp", "8", "--nnodes", "2")
        assert code == 0, json.dumps(doc)[-3000:]
        run_id = doc["run_id"]
        assert doc["base_url"].startswith(f"http://{slurm_lab.node_address(1)}:"), doc["base_url"]
        assert [s.split()[1] for s in _launch_steps(slurm_lab, allocation)] == [
            f"xpufleet-launch-{run_id}"
        ]
        client = openai.OpenAI(base_url=doc["base_url"], api_key="lab", timeout=120)
        chat = [{"role": "user", "content": "Which ranks answer this?"}]
        reply = client.chat.completions.create(model=doc["model"], messages=chat, max_tokens=16)
        assert reply.choices[0].message.content == reference_completion(
            apply_chat_template(chat), 16
        )
        code, status = invoke("status")
        assert code == 0
        assert f"xpufleet-launch-{run_id}) running" in json.dumps(status["cluster"])
        pids = {
            int(r["data"]["rank"]): int(r["data"]["pid"])
            for host in status["hosts"].values()
            for r in host["results"]
            if r["id"].startswith("status.rank.")
        }
        assert sorted(pids) == list(range(8))
        # logs --follow streams through srun steps; one Ctrl-C ends it
        follow_then_interrupt(inventory, env=slurm_lab.slurm.client_env())
        os.kill(pids[5], signal.SIGKILL)
        assert _wait_until(
            lambda: (
                not _launch_steps(slurm_lab, allocation)
                and not any(pid_alive(p) for p in pids.values())
            ),
            60,
        ), "the step or a rank survived a rank's death"
        code, status = invoke("status")
        assert code == 1
        death = status["first_death"]
        assert (death["host"], death["rank"], death["pid"]) == ("node2", 5, pids[5])
        assert death["exit"]["signal"] == "SIGKILL"
    finally:
        code, stopped = invoke("stop")
    assert code == 0, json.dumps(stopped)[-2000:]
    assert not _launch_steps(slurm_lab, allocation)


def test_emitted_sbatch_script_serves_and_scancel_stops_it(
    provisioned_lab: Lab, slurm_lab: Lab, tmp_path: Path
) -> None:
    """`launch --emit sbatch` prints a self-contained batch script of the same plan;
    submitted to the lab's Slurm it serves the OpenAI API, and scancel ends it with no
    rank or port left. One rank per node (--tp 2): the tp 8 launch is the test above."""
    import urllib.request

    base = slurm_lab.port + 2200
    doc = yaml.safe_load(slurm_lab.slurm_inventory_path.read_text())
    doc["partition"] = "lab"  # hosts from the partition: no allocation needed to emit
    doc["vars"].update(rendezvous_port=base, supervisor_port=base + 10, sglang_port=base + 20)
    inventory = tmp_path / "inventory-slurm.yaml"
    inventory.write_text(yaml.safe_dump(doc))
    emitted = _client(
        slurm_lab,
        [INVOKE, "launch", "--tp", "2", "--nnodes", "2", "--emit", "sbatch",
         "--hosts", str(inventory)],
    )  # fmt: skip
    assert emitted.returncode == 0, emitted.stderr
    script = tmp_path / "serve.sbatch"
    script.write_text(emitted.stdout)
    assert "#SBATCH --nodes=2" in emitted.stdout and "sbcast" in emitted.stdout
    submitted = _client(slurm_lab, ["sbatch", "--parsable", str(script)], cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted.stdout.strip().split(";")[0]
    url = f"http://{slurm_lab.node_address(1)}:{base + 20}"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/health_generate", timeout=5) as reply:
                return reply.status == 200
        except OSError:
            return False

    try:
        assert _wait_until(answers, 240), (tmp_path / f"slurm-{job}.out").read_text()[-2000:]
        with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as reply:
            models = json.loads(reply.read())
        assert [m["id"] for m in models["data"]] == [doc["vars"]["model_name"]]
    finally:
        _client(slurm_lab, ["scancel", job])

    def gone() -> bool:
        queue = _client(slurm_lab, ["squeue", "-h", f"--jobs={job}"])
        return not queue.stdout.strip() and not answers()

    assert _wait_until(gone, 60)
    from xpufleet.launch.remote.supervisor import port_holders

    assert _wait_until(lambda: not port_holders(slurm_lab.node_address(1), base), 30)


def test_doctor_names_the_node_srun_cannot_reach_and_probes_the_others(
    allocation: str, slurm_lab: Lab, tmp_path: Path
) -> None:
    """A host Slurm refuses (not in the allocation) makes the one-step probe fail as a
    whole; each host is then probed alone: the bad one is named unreachable, the others
    get their facts."""
    from xpufleet.doctor import gather

    hosts = load_inventory(_inventory_for_job(slurm_lab, tmp_path, allocation)).select(
        "node1:node2"
    )
    stranger = replace(hosts[0], name="node9", vars={**hosts[0].vars})
    outcomes = gather([*hosts, stranger], slurm_lab.ssh_options(), forks=4)
    error = outcomes["node9"].error
    assert isinstance(error, UnreachableError) and error.host == "node9", outcomes["node9"]
    for name in ("node1", "node2"):
        output = outcomes[name].value
        assert output is not None and output.raw is not None, outcomes[name]
        assert output.raw["hostname"] == name
