"""Each fault is visible at the OS level of its node only, and heals."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from xpufleet import shell
from xpufleet.lab import Lab
from xpufleet.lab.pybase import BaseEnv, base_root

pytestmark = pytest.mark.lab


def test_no_driver(lab: Lab, on) -> None:
    probe = "ls /sys/class/drm; test -d /sys/module/i915 && echo module; xpu-smi discovery"
    with lab.fault(2, "no_driver"):
        faulty = on(2, probe).stdout
        healthy = on(1, probe).stdout
    assert "card0" not in faulty and "module" not in faulty
    assert "No device discovered" in faulty
    assert "card3" in healthy and "module" in healthy and "Max 1550" in healthy
    assert "card3" in on(2, probe).stdout  # healed


def test_old_oneapi(lab: Lab, on) -> None:
    probe = "readlink /opt/intel/oneapi/ccl/latest; sycl-ls | head -1"
    with lab.fault(3, "old_oneapi"):
        faulty = on(3, probe).stdout.splitlines()
        healthy = on(4, probe).stdout.splitlines()
    assert faulty[0] == "2021.10.0" and faulty[1].startswith("[opencl:cpu:0]")
    assert healthy[0] == "2021.15" and healthy[1].startswith("[level_zero:gpu][level_zero:0]")
    assert on(3, probe).stdout.splitlines()[0] == "2021.15"


def test_missing_xpu_smi(lab: Lab, on) -> None:
    with lab.fault(1, "missing_xpu_smi"):
        assert on(1, "command -v xpu-smi").exit_status == 1
        assert on(1, "command -v sycl-ls").exit_status == 0
        assert on(2, "command -v xpu-smi").exit_status == 0
    assert on(1, "xpu-smi -v").stdout.startswith("xpu-smiCLI:")


def test_torch_without_xccl(lab: Lab, on) -> None:
    script = "import torch.distributed as d; print(d.is_xccl_available())"
    probe = f"{BaseEnv(base_root()).python} -W ignore -c {shell.quote(script)}"
    marker = "cat /opt/intel/.lab/torch.json"
    with lab.fault(4, "torch_no_xccl"):
        assert on(4, probe).stdout.strip() == "False"  # real torch, patched by the lab hook
        assert json.loads(on(3, marker).stdout)["xccl_available"] is True
    # (test_lab_cluster imports torch on a healthy node and sees xccl available)
    assert json.loads(on(4, marker).stdout)["xccl_available"] is True


def _df_models(result_stdout: str) -> tuple[int, str]:
    """(available KiB, use%) of `df -P /models`."""
    fields = result_stdout.strip().splitlines()[-1].split()
    return int(fields[3]), fields[4]


def test_full_disk(lab: Lab, on) -> None:
    name = "/models/keep-me"
    on(2, f"echo weights > {name}")
    try:
        with lab.fault(2, "full_disk"):
            assert _df_models(on(2, "df -P /models").stdout) == (0, "100%")
            assert on(2, f"cat {name}").stdout == "weights\n"  # the model is still there
            assert on(2, "echo x > /models/new").exit_status != 0
            assert _df_models(on(1, "df -P /models").stdout)[0] > 0
        assert _df_models(on(2, "df -P /models").stdout)[0] > 0
    finally:
        on(2, f"rm -f {name}")


def test_clock_skew(lab: Lab, on) -> None:
    probe = "date +%s; python3 -c 'import time; print(int(time.time()))'"
    with lab.fault(3, "clock_skew", 600):
        now = time.time()
        skewed = [int(v) - now for v in on(3, probe).stdout.split()]
        other = [int(v) - now for v in on(2, probe).stdout.split()]
    assert all(550 < s < 650 for s in skewed), skewed
    assert all(abs(s) < 30 for s in other), other
    assert all(abs(int(v) - time.time()) < 30 for v in on(3, probe).stdout.split())


@contextlib.contextmanager
def _listeners(addresses: list[str], port: int) -> Iterator[None]:
    sockets = []
    try:
        for address in addresses:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, port))
            sock.listen(8)
            sockets.append(sock)
        yield
    finally:
        for sock in sockets:
            sock.close()


def _reaches(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return True
    except OSError:
        return False


def test_blocked_port(lab: Lab) -> None:
    port = lab.launch_ports()["rendezvous_port"]  # the fault's default: this lab's own
    node1, node2 = lab.node_address(1), lab.node_address(2)
    with _listeners([node1, node2], port):
        with lab.fault(2, "blocked_port"):
            rules = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True)
            assert any(
                f"{node2}/32" in r and f"--dport {port}" in r and lab.tag in r
                for r in rules.stdout.splitlines()
            )
            assert not _reaches(node2, port)
            assert _reaches(node1, port)
        assert _reaches(node2, port)
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert f"{lab.tag}:node" not in rules  # (the bastion's own rule may stay: not a fault)


def test_blocked_egress(lab: Lab, on) -> None:
    """The node's own processes (started through its sshd, before or after the fault)
    cannot connect to the port anywhere; the other nodes and the control machine can."""
    port = lab.launch_ports()["rendezvous_port"]
    node1 = lab.node_address(1)
    probe = (
        "timeout 3 python3 -c 'import socket, sys; "
        f"socket.create_connection((sys.argv[1], {port}), timeout=2)' {node1} && echo reached"
    )
    with _listeners([node1], port):
        assert "reached" in on(2, probe).stdout
        with lab.fault(2, "blocked_egress"):
            rules = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True)
            assert any(
                f"--dport {port}" in r and "--path" in r and f"{lab.tag}:node2" in r
                for r in rules.stdout.splitlines()
            )
            assert "reached" not in on(2, probe).stdout
            assert "reached" in on(3, probe).stdout
            assert _reaches(node1, port)
        assert "reached" in on(2, probe).stdout
    rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert f"{lab.tag}:node" not in rules


def test_fault_names_are_checked(lab: Lab) -> None:
    from xpufleet.errors import InputError

    with pytest.raises(InputError):
        lab.inject(1, "no_such_fault")


def test_faults_show_in_status(lab: Lab) -> None:
    with lab.fault(4, "clock_skew", 120):
        status = {n.name: n for n in lab.status().nodes}
        assert status["node4"].faults == ["clock_skew=120"] and status["node4"].state == "up"
        assert status["node1"].faults == []
    assert json.dumps([n.faults for n in lab.status().nodes]) == "[[], [], [], []]"
