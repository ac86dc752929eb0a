"""Time `doctor` on N lab nodes against an Ansible playbook gathering the same facts.

    XPUFLEET_LAB_DIR=... XPUFLEET_LAB_NET=... XPUFLEET_LAB_PORT=... \\
        .venv/bin/python benchmarks/doctor.py [--nodes 4,8,16,32] [--runs 3] [--no-ansible]
        [--slurm]

For each N the lab is converged to N healthy nodes (`Lab.up`), then:
- doctor (the library call `invoke doctor` makes: one probe per host, forks = N) is
  timed `--runs` times; the median wall time and the remote round trips per host
  (`Session.round_trips`) are printed;
- an Ansible playbook (ansible-core, benchmark-only) runs the same probes as 17 tasks
  with `gather_facts: false` and `forks` = N over the lab's own inventory, with the lab's
  key and known_hosts (ssh reads no user config), and is timed once.
The ratio is Ansible's time over doctor's. With `--slurm` the lab also runs its real
Slurm and doctor is timed a second way, over the Slurm connector: the same hosts from
a `plugin: slurm` inventory of an N-node allocation (salloc --no-shell), all probed in
ONE srun step (column `srun s`, median of `--runs`). With `--bastion` doctor is
timed a third way: the same nodes reached only through the lab's bastion (their
private addresses, ProxyJump; one SSH connection to the bastion carries every node's
channel), column `bastion s` and its ratio to direct. Default lab: its own dir, 127.0.9.x and port
22922 (override with the XPUFLEET_LAB_* variables); it is brought down at the end.

The lab is real sshd nodes on loopback of ONE shared 2-core machine, not yet
provisioned (no Python environment: neither side imports torch); the GPU tools are the
lab's simulation. Nothing ran on Intel hardware. The machine's load is printed too.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from xpufleet.doctor import run_doctor
from xpufleet.inventory import load_inventory
from xpufleet.lab import Lab, bastion

ROOT = Path(__file__).resolve().parents[1]
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")

#: the probes of doctor, one Ansible task each (what a user would write instead)
PROBES: list[tuple[str, str]] = [
    (
        "drm cards",
        "cat /sys/class/drm/card*/device/vendor /sys/class/drm/card*/device/device "
        "/sys/class/drm/card*/device/uevent 2>/dev/null || true",
    ),  # fmt: skip
    ("driver module", "cat /sys/module/i915/version /sys/module/xe/version 2>/dev/null || true"),
    ("runtime packages", "dpkg -s level-zero intel-level-zero-gpu intel-opencl-icd || true"),
    ("opencl icds", "cat /etc/OpenCL/vendors/*.icd 2>/dev/null || true"),
    ("xpu-smi version", "xpu-smi -v || true"),
    ("xpu-smi discovery json", "xpu-smi discovery -j || true"),
    ("xpu-smi discovery", "xpu-smi discovery || true"),
    ("sycl-ls", "ZE_FLAT_DEVICE_HIERARCHY=FLAT sycl-ls || true"),
    ("oneapi layout", "ls -l /opt/intel/oneapi /opt/intel/oneapi/*/latest 2>/dev/null || true"),
    ("python", "python3 -V"),
    (
        "torch in env",
        "test -x /opt/xpufleet/venv/bin/python && /opt/xpufleet/venv/bin/python "
        "-c 'import torch; print(torch.__version__, torch.xpu.is_available())' || true",
    ),  # fmt: skip
    ("hostname", 'hostname; getent ahosts "$(hostname)" || true'),
    ("nic", "ip -j addr show dev lo"),
    ("disk", "df -Pk /models"),
    ("memory", "cat /proc/meminfo"),
    ("clock", "date +%s.%N"),
    (
        "leftovers",
        "ss -ltnp 2>/dev/null | grep -E ':(29500|30000) ' || true; "
        "ls -l /proc/[0-9]*/fd 2>/dev/null | grep -c /dev/dri || true",
    ),  # fmt: skip
]


def playbook_text() -> str:
    tasks = [
        {"name": name, "shell": command, "changed_when": False, "register": f"probe_{i}"}
        for i, (name, command) in enumerate(PROBES)
    ]
    play = [{"hosts": "all", "gather_facts": False, "tasks": tasks}]
    return yaml.safe_dump(play, sort_keys=False)


def time_ansible(lab: Lab, nodes: int, workdir: Path) -> tuple[float, int]:
    """Wall time of the playbook with forks = nodes, and its exit status."""
    playbook = workdir / "doctor-facts.yaml"
    playbook.write_text(playbook_text())
    ssh_args = f"-F /dev/null -o UserKnownHostsFile={lab.known_hosts} -o StrictHostKeyChecking=yes"
    env = dict(
        os.environ,
        ANSIBLE_HOME=str(workdir / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(workdir / "ansible-tmp"),
        ANSIBLE_HOST_KEY_CHECKING="True",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_DISPLAY_OK_HOSTS="false",
        ANSIBLE_DISPLAY_SKIPPED_HOSTS="false",
    )
    argv = [
        ANSIBLE_PLAYBOOK,
        "-i",
        str(lab.inventory_path),
        "--forks",
        str(nodes),
        "-e",
        f"ansible_ssh_common_args='{ssh_args}'",
        "-e",
        "ansible_python_interpreter=/usr/bin/python3",
        str(playbook),
    ]
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=workdir)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
    return elapsed, proc.returncode


def time_doctor(lab: Lab, nodes: int, runs: int) -> tuple[list[float], dict[str, int], str]:
    hosts = load_inventory(lab.inventory_path).select(None)
    assert len(hosts) == nodes, f"inventory has {len(hosts)} hosts, expected {nodes}"
    times: list[float] = []
    round_trips: dict[str, int] = {}
    summary = ""
    for _ in range(runs):
        started = time.perf_counter()
        report = run_doctor(hosts, lab.ssh_options(), forks=nodes)
        times.append(time.perf_counter() - started)
        round_trips = report.extra["doctor"]["round_trips"]
        summary = " ".join(f"{k}={v}" for k, v in report.summary().items())
    return times, round_trips, summary


def time_doctor_slurm(lab: Lab, nodes: int, runs: int, workdir: Path) -> list[float]:
    """doctor over srun inside an N-node allocation (made and cancelled here)."""
    env = lab.slurm.client_env()
    proc = subprocess.run(
        ["salloc", f"-N{nodes}", "--no-shell", "--job-name=bench-doctor"],
        capture_output=True,
        text=True,
        env=env,
    )
    match = re.search(r"Granted job allocation (\d+)", proc.stderr)
    assert match, proc.stderr
    job = match.group(1)
    try:
        doc = yaml.safe_load(lab.slurm_inventory_path.read_text())
        doc["job"] = job
        inventory = workdir / f"slurm-{nodes}.yaml"
        inventory.write_text(yaml.safe_dump(doc))
        hosts = load_inventory(inventory).select(None)
        assert len(hosts) == nodes, f"allocation has {len(hosts)} hosts, expected {nodes}"
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            report = run_doctor(hosts, lab.ssh_options(), forks=nodes)
            times.append(time.perf_counter() - started)
            failed = report.summary().get("fail", 0)
            assert not failed, f"doctor over srun failed {failed} checks"
        return times
    finally:
        subprocess.run(["scancel", job], env=env, check=False)


def time_doctor_bastion(lab: Lab, nodes: int, runs: int, workdir: Path) -> list[float]:
    """doctor on the nodes' private addresses, through the lab's one bastion."""
    lab.bastion_up()
    inventory = workdir / f"bastion-{nodes}.yaml"
    inventory.write_text(bastion.inventory(lab, user="root"))
    hosts = load_inventory(inventory).select(None)
    assert len(hosts) == nodes and all(h.jump for h in hosts)
    times = []
    for _ in range(runs):
        options = lab.ssh_options()
        started = time.perf_counter()
        report = run_doctor(hosts, options, forks=nodes)
        times.append(time.perf_counter() - started)
        unreachable = [n for n, h in report.hosts.items() if not h.reachable]
        assert not unreachable, f"unreachable through the bastion: {unreachable}"
        assert options.hub.handshakes == 1, "one bastion connection for all nodes"
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="4,8,16,32", help="comma-separated node counts")
    parser.add_argument("--runs", type=int, default=3, help="doctor runs per N (median shown)")
    parser.add_argument("--no-ansible", action="store_true", help="time doctor only")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    parser.add_argument("--slurm", action="store_true", help="also time doctor over srun")
    parser.add_argument(
        "--bastion", action="store_true", help="also time doctor through the lab's bastion"
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]
    lab = Lab(
        os.environ.get("XPUFLEET_LAB_DIR") or ROOT / ".lab-bench-doctor",
        os.environ.get("XPUFLEET_LAB_NET") or "127.0.9",
        int(os.environ.get("XPUFLEET_LAB_PORT") or 22922),
    )
    print(f"lab {lab.dir} ({lab.net}.x:{lab.port}); load average {os.getloadavg()}")
    header = f"{'N':>3} {'doctor s':>9} {'runs':>18} {'rt/host':>7} {'ansible s':>9} {'ratio':>6}"
    if args.slurm:
        header += f" {'srun s':>7} {'srun runs':>18}"
    if args.bastion:
        header += f" {'bastion s':>9} {'bastion runs':>18} {'/direct':>7}"
    rows = []
    print(header)
    try:
        with tempfile.TemporaryDirectory(prefix="xpufleet-bench-doctor-") as tmp:
            for nodes in counts:
                lab.up(nodes=nodes, slurm=True if args.slurm else None)
                times, trips, summary = time_doctor(lab, nodes, args.runs)
                median = statistics.median(times)
                per_host = sorted(set(trips.values()))
                ansible_s, status = (float("nan"), 0)
                if not args.no_ansible:
                    ansible_s, status = time_ansible(lab, nodes, Path(tmp))
                ratio = ansible_s / median if median else float("nan")
                runs = ",".join(f"{t:.2f}" for t in times)
                trips_text = "/".join(str(t) for t in per_host)
                row = (
                    f"{nodes:>3} {median:>9.2f} {runs:>18} {trips_text:>7} "
                    f"{ansible_s:>9.1f} {ratio:>5.1f}x"
                )
                if args.slurm:
                    srun_times = time_doctor_slurm(lab, nodes, args.runs, Path(tmp))
                    srun_runs = ",".join(f"{t:.2f}" for t in srun_times)
                    row += f" {statistics.median(srun_times):>7.2f} {srun_runs:>18}"
                if args.bastion:
                    via = time_doctor_bastion(lab, nodes, args.runs, Path(tmp))
                    via_runs = ",".join(f"{t:.2f}" for t in via)
                    via_median = statistics.median(via)
                    row += f" {via_median:>9.2f} {via_runs:>18} {via_median / median:>6.2f}x"
                if status:
                    row += f"  (ansible exit {status})"
                rows.append(row)
                print(row, f"  doctor: {summary}; load {os.getloadavg()[0]:.1f}", flush=True)
    finally:
        if not args.keep:
            lab.down()


if __name__ == "__main__":
    main()
