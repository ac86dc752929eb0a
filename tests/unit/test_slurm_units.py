"""The Slurm connector's pure parts, the lab's slurm.conf and the `plugin: slurm`
inventory's refusals (the real Slurm runs in tests/lab/test_slurm.py)."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from xpufleet.errors import InventoryError
from xpufleet.facts.probe import PROBE_COMMAND, build_node_script, probe_params
from xpufleet.host import Host
from xpufleet.inventory import load_inventory
from xpufleet.inventory_slurm import parse_node_records
from xpufleet.lab.slurm import SlurmLayout, slurm_conf, task_prolog
from xpufleet.slurm import (
    COMMAND_VAR,
    NODE_VAR,
    parse_fanout,
    split_srun_errors,
    srun_argv,
)


def _conf(net: str, port: int, count: int = 4) -> dict[str, str]:
    layout = SlurmLayout(Path(f"/labs/{port}/slurm"), net, port)
    text = slurm_conf(layout, count, Path("/labs/nodes"))
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line[:30])


def test_slurm_conf_derives_addresses_and_ports_from_the_lab() -> None:
    conf = _conf("127.0.27", 22722)
    assert conf["SlurmctldHost"] == "localhost(127.0.27.254)"
    assert conf["SlurmctldPort"] == "23722"
    node = conf["NodeName"]
    assert "NodeAddr=127.0.27.[1-4]" in node and "Port=[23723-23726]" in node
    assert "NodeHostname=node[1-4]" in node
    for key, value in {
        "ProctrackType": "proctrack/linuxproc",
        "TaskPlugin": "task/none",
        "SlurmdParameters": "config_overrides",
        "AuthInfo": "socket=/labs/22722/slurm/munge/munge.socket",
        "StateSaveLocation": "/labs/22722/slurm/state",
    }.items():
        assert conf[key] == value
    assert "CommunicationParameters" not in conf  # NoInAddrAny breaks srun in batch jobs


def test_two_labs_slurm_ports_do_not_overlap() -> None:
    def ports(net: str, port: int) -> set[int]:
        layout = SlurmLayout(Path("/x"), net, port)
        return {layout.controller_port} | {layout.node_port(i) for i in range(1, 33)}

    assert not ports("127.0.1", 22022) & ports("127.0.27", 22722)
    assert not ports("127.0.1", 22022) & {22022, 22722, 29500, 29510, 30000}


def test_task_prolog_exports_what_the_nodes_sshd_sets(tmp_path: Path) -> None:
    node = tmp_path / "nodes" / "node2"
    node.mkdir(parents=True)
    (node / "sshd_config").write_text(
        "ListenAddress 127.0.1.2:22022\nSetEnv PATH=/lab/node2/bin:/usr/bin FAKETIME=+30\n"
    )
    prolog = tmp_path / "prolog.sh"
    prolog.write_text(task_prolog(tmp_path / "nodes"))
    out = subprocess.run(
        ["sh", str(prolog)], env={"SLURMD_NODENAME": "node2"}, capture_output=True, text=True
    ).stdout
    assert out.splitlines() == ["export PATH=/lab/node2/bin:/usr/bin", "export FAKETIME=+30"]
    other = subprocess.run(
        ["sh", str(prolog)], env={"SLURMD_NODENAME": "node9"}, capture_output=True, text=True
    )
    assert (other.returncode, other.stdout) == (0, "")


def test_srun_argv_names_the_job_and_never_the_command() -> None:
    hosts = [
        Host("node1", "n1", vars={"connector": "slurm", "slurm_job": "42"}),
        Host("node3", "n3", vars={"connector": "slurm", "slurm_job": "42"}),
    ]
    argv = srun_argv(hosts, label=True)
    assert "--jobid=42" in argv and "--nodelist=node1,node3" in argv
    assert "--nodes=2" in argv and "--ntasks-per-node=1" in argv and "--label" in argv
    assert f"--export={COMMAND_VAR}" in argv and "--overlap" in argv
    assert argv[-3:] == ["/bin/sh", "-c", f'eval "${COMMAND_VAR}"']
    assert not any(a.startswith("--jobid") for a in srun_argv([Host("node1", "n1")]))


def _labelled(label: int, text: str) -> list[str]:
    """What srun --label prints for one line: pieces of at most 1024 characters."""
    return [f"{label}: {text[i : i + 1024]}" for i in range(0, max(1, len(text)), 1024)]


def test_parse_fanout_reassembles_each_nodes_output() -> None:
    long_json = '{"x": "' + "a" * 5000 + '"}\n'
    outputs = {"node1": (long_json, "warning\n", 0), "node4": ("two\nlines\n", "", 3)}
    streams: dict[int, list[str]] = {}
    for label, (node, (out, err, rc)) in enumerate(outputs.items()):
        lines = [f"@xpufleet node {node}"]
        lines += base64.encodebytes(out.encode()).decode().splitlines()
        lines += ["@xpufleet err", *base64.encodebytes(err.encode()).decode().splitlines()]
        lines += [f"@xpufleet end {rc}"]
        streams[label] = [piece for line in lines for piece in _labelled(label, line)]
    # srun interleaves the tasks' lines
    mixed = [line for pair in zip(*streams.values(), strict=False) for line in pair]
    mixed += streams[0][len(streams[1]) :] + streams[1][len(streams[0]) :]
    parsed = parse_fanout(
        (lbl, text, float(n))
        for n, line in enumerate(mixed)
        for lbl, _, text in [line.partition(": ")]
    )
    assert parsed["node1"].stdout == long_json and parsed["node1"].stderr == "warning\n"
    assert (parsed["node4"].stdout, parsed["node4"].status) == ("two\nlines\n", 3)
    truncated = parse_fanout(
        (lbl, t, 0.0) for lbl, t in [("0", "@xpufleet node node2"), ("0", "eA==")]
    )
    assert truncated == {}  # no end marker: the node did not report


def test_split_srun_errors_keeps_task_output_and_task_exits_apart() -> None:
    stderr = (
        "task says hi\n"
        "srun: error: node2: task 0: Exited with exit code 7\n"
        "srun: error: Unable to create step for job 12: Invalid node name specified\n"
    )
    kept, errors = split_srun_errors(stderr)
    assert kept == "task says hi\n"
    assert errors == ["srun: error: Unable to create step for job 12: Invalid node name specified"]


def test_one_probe_script_serves_every_node(tmp_path: Path) -> None:
    """build_node_script: each node picks its own parameters by its name; python and sh."""
    hosts = [Host(f"node{i}", f"127.0.9.{i}", vars={"nic": f"nic{i}"}) for i in (1, 2)]
    script = build_node_script({h.name: probe_params(h, hosts) for h in hosts}, NODE_VAR)
    assert script.text.count("def drm_cards(") == 1  # the source once, not per node
    for host in hosts:
        env = {**os.environ, NODE_VAR: host.name}
        proc = subprocess.run(
            ["sh", "-c", PROBE_COMMAND], input=script.text, capture_output=True, text=True, env=env,
            timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert f'"name": "{host.vars["nic"]}"' in proc.stdout
    stranger = subprocess.run(
        ["sh", "-c", PROBE_COMMAND], input=script.text, capture_output=True, text=True,
        env={**os.environ, NODE_VAR: "node7"}, timeout=120,
    )  # fmt: skip
    assert stranger.returncode != 0


def test_parse_node_records() -> None:
    text = (
        "NodeName=node1 Arch=x86_64 CoresPerSocket=1 NodeAddr=127.0.1.1 NodeHostName=node1 "
        "Version=22.05.8\nNodeName=node2 NodeAddr=10.0.0.2 NodeHostName=c2\n"
    )
    records = parse_node_records(text)
    assert records["node2"]["NodeAddr"] == "10.0.0.2"
    assert records["node1"]["NodeHostName"] == "node1"


@pytest.mark.parametrize(
    ("text", "line", "key", "message"),
    [
        ("plugin: slurm\nnodes: all\n", 2, "nodes", "unknown key"),
        ("plugin: slurm\njob: 1\npartition: p\n", 2, "job", "either"),
        ("plugin: slurm\ngroup: all\n", 2, "group", "not a group name"),
        ("plugin: slurm\nvars: [1]\n", 2, "vars", "mapping"),
        ("plugin: slurm\n", 1, "plugin", "no Slurm allocation"),
        ("plugin: constructed\n", 1, "plugin", "unknown inventory plugin"),
    ],
)
def test_bad_slurm_inventories_are_refused_with_file_line_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, line: int, key: str, message: str
) -> None:
    monkeypatch.delenv("SLURM_JOB_NODELIST", raising=False)
    path = tmp_path / "slurm.yaml"
    path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    assert (caught.value.line, caught.value.key) == (line, key)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_launch_step_takes_the_node_rank_from_slurm_nodeid(tmp_path: Path) -> None:
    """The engine step's task runs node rank SLURM_NODEID's supervisor (run here with a
    stand-in `setsid` that records what it would run); a task Slurm numbered otherwise
    than the plan (another node under that SLURM_NODEID) exits 97 naming both."""
    from xpufleet.launch.slurm_step import engine_argv, engine_command, parse_steps

    # node rank order is Slurm's node table, here node2 before node1
    dirs = {"node2": str(tmp_path / "r 2"), "node1": str(tmp_path / "r1")}
    for directory in dirs.values():
        Path(directory).mkdir()
    command = engine_command(dirs, {"node1": "python3", "node2": "python3"})
    fake = tmp_path / "bin"
    fake.mkdir()
    seen = tmp_path / "seen"
    (fake / "setsid").write_text(f'#!/bin/sh\necho "$PWD|$*" > {seen}\n')
    (fake / "setsid").chmod(0o755)
    path = f"{fake}:/usr/bin:/bin"
    for node_id, (node, directory) in enumerate(dirs.items()):
        proc = subprocess.run(
            ["sh", "-c", command],
            env={"PATH": path, "SLURMD_NODENAME": node, "SLURM_NODEID": str(node_id)},
            capture_output=True, text=True,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        cwd, _, argv = seen.read_text().strip().partition("|")
        assert cwd == directory
        assert argv == f"--wait python3 supervisor.py supervise {directory}"
    seen.unlink()
    swapped = subprocess.run(
        ["sh", "-c", command],
        env={"PATH": path, "SLURMD_NODENAME": "node1", "SLURM_NODEID": "0"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert swapped.returncode == 97 and not seen.exists()
    assert "node node1 SLURM_NODEID 0, the plan has node2 as node rank 0" in swapped.stderr
    stranger = subprocess.run(
        ["sh", "-c", command],
        env={"SLURMD_NODENAME": "node9", "SLURM_NODEID": "2"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert stranger.returncode == 97 and "no node rank 2" in stranger.stderr
    hosts = [Host(n, n, vars={"connector": "slurm", "slurm_job": "7"}) for n in dirs]
    argv = engine_argv(hosts, "RUN")
    assert "--kill-on-bad-exit=1" in argv and "--jobid=7" in argv
    assert "--job-name=xpufleet-launch-RUN" in argv and "--overlap" not in argv
    assert parse_steps("  7.0 bash\n7.3 xpufleet-launch-RUN\nbogus\n") == {
        "bash": "7.0",
        "xpufleet-launch-RUN": "7.3",
    }
