"""The Slurm connector: a host's commands as `srun` steps inside the allocation.

The SSH connector (transport.Session) reaches a node through its sshd; this one asks
Slurm: `srun -w HOST -N1 -n1` runs a command on one node, one `srun` over all selected
nodes runs the doctor probe (its output split per node), no SSH to compute nodes is
needed. A host uses it when its `connector` variable is `slurm`; `slurm_job` names the
job whose allocation the steps run in (default: SLURM_JOB_ID of the control node) and
`slurm_conf` the SLURM_CONF of the Slurm commands.

Steps run with `--overlap` (they share the allocation with a running engine) and
`--export=XPUFLEET_COMMAND`: the task gets the node's own environment, as an SSH
session does, plus the command in an environment variable that `/bin/sh -c 'eval ...'`
runs, so commands never appear in the control node's process list.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from .errors import CommandFailed, CommandTimeout, ConnectionLost, HostError, UnreachableError
from .host import Host
from .transport import CHUNK, CommandResult, Connector, Feed, Prepared, SSHOptions

COMMAND_VAR = "XPUFLEET_COMMAND"
NODE_VAR = "XPUFLEET_NODE"
#: what every step runs: the command from the environment (never in argv)
STEP_ARGV = ("/bin/sh", "-c", f'eval "${COMMAND_VAR}"')
#: seconds srun gets to end its step after SIGTERM before it is killed
TERM_GRACE = 5.0
#: srun's own report of a task's end: the task ran, its status is the command's
_TASK_END = re.compile(
    r"^srun: error: \S+: tasks? [0-9,-]+: (Exited with exit code \d+|Killed|Terminated)\s*$"
)
_MARK = "@xpufleet"


def is_slurm(host: Host) -> bool:
    return host.var.connector == "slurm"


def srun_env(host: Host, command: str) -> dict[str, str]:
    """srun's environment: the control node's, SLURM_CONF if the inventory names one,
    and the command itself (exported to the task, nothing else is)."""
    env = dict(os.environ)
    conf = host.var.slurm_conf
    if conf:
        env["SLURM_CONF"] = str(conf)
    env[COMMAND_VAR] = command
    return env


def srun_argv(
    hosts: Sequence[Host],
    *,
    label: bool = False,
    job_name: str = "xpufleet",
    overlap: bool = True,
    kill_on_bad_exit: bool = False,
) -> list[str]:
    """One step with one task on each of `hosts` (in the hosts' allocation). xpufleet's
    short steps overlap the allocation's main work; the engine's step is that work."""
    names = [h.name for h in hosts]
    argv = ["srun", "--quiet"]
    if overlap:
        argv.append("--overlap")
    if kill_on_bad_exit:
        argv.append("--kill-on-bad-exit=1")
    argv += [
        f"--export={COMMAND_VAR}",
        f"--job-name={job_name}",
        f"--nodes={len(names)}",
        f"--ntasks={len(names)}",
        "--ntasks-per-node=1",
        f"--nodelist={','.join(names)}",
    ]
    job = hosts[0].var.slurm_job
    if job:
        argv.append(f"--jobid={job}")
    if label:
        argv.append("--label")
    return [*argv, *STEP_ARGV]


def split_srun_errors(stderr: str) -> tuple[str, list[str]]:
    """(the tasks' stderr, srun's own error lines); srun's notes of a task's exit go."""
    kept, errors = [], []
    for line in stderr.splitlines(keepends=True):
        if line.startswith("srun: "):
            if not _TASK_END.match(line.rstrip("\n")):
                errors.append(line.strip())
            continue
        kept.append(line)
    return "".join(kept), errors


@dataclass
class StepResult:
    status: int | None  # None: timed out (the step was ended)
    stdout: bytes
    stderr: bytes
    #: per label (--label) the time its end marker arrived, for the probe's clock
    marks: dict[str, float] = field(default_factory=dict)


def run_step(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    feed: Feed | None,
    timeout: float | None,
    stdout_to: Callable[[bytes], None] | None = None,
    on_line: Callable[[bytes], None] | None = None,
    cancel: threading.Event | None = None,
) -> StepResult:
    """Run srun: `feed(write)` writes its stdin (in a thread), stdout and stderr drained
    as they come; past `timeout` (or once `cancel` is set) srun gets SIGTERM (it ends
    the step), then SIGKILL."""
    proc = spawn(argv, env)
    assert proc.stdin and proc.stdout and proc.stderr

    def write_stdin() -> None:
        stdin = proc.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):
            if feed is not None:
                feed(stdin.write)
        with contextlib.suppress(BrokenPipeError, OSError):
            stdin.close()

    writer = threading.Thread(target=write_stdin, daemon=True)
    writer.start()
    out: list[bytes] = []
    err: list[bytes] = []
    partial = b""
    deadline = None if timeout is None else time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, "out")
        sel.register(proc.stderr, selectors.EVENT_READ, "err")
        open_streams = 2
        while open_streams:
            if deadline is not None and time.monotonic() > deadline and not timed_out:
                timed_out = True
                _end(proc)
            if cancel is not None and cancel.is_set() and proc.poll() is None:
                _end(proc)
            for key, _ in sel.select(timeout=0.2):
                block = os.read(key.fileobj.fileno(), CHUNK)  # type: ignore[union-attr]
                if not block:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                if key.data == "err":
                    err.append(block)
                elif stdout_to is not None:
                    stdout_to(block)
                elif on_line is not None:  # lines go there, stdout is not kept
                    partial += block
                    *lines, partial = partial.split(b"\n")
                    for line in lines:
                        on_line(line)
                else:
                    out.append(block)
    status = proc.wait()
    writer.join(timeout=TERM_GRACE)
    return StepResult(None if timed_out else status, b"".join(out), b"".join(err))


def spawn(argv: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """srun with stdin, stdout and stderr piped, in its own session."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
    )


def _end(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM srun (it cancels its step and tasks), SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=TERM_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


class ProcessChannel:
    """A local process talked to while it runs (here: an srun step whose stdin and stdout
    stay open): what the relay (xpufleet/relay) needs of an SSH channel (send, lines,
    stderr, exit_status, close), so wheels reach Slurm nodes through the same relay."""

    def __init__(self, host: str, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.host = host
        self.stderr = b""
        self._proc = spawn(argv, env)
        self._err: list[bytes] = []
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    def _read_stderr(self) -> None:
        stream = self._proc.stderr
        assert stream is not None
        while block := stream.read1(CHUNK):  # type: ignore[attr-defined]
            self._err.append(block)

    def send(self, data: bytes) -> None:
        stdin: IO[bytes] | None = self._proc.stdin
        try:
            assert stdin is not None
            stdin.write(data)
            stdin.flush()
        except (OSError, ValueError) as exc:
            raise ConnectionLost(
                self.host, f"transfer cut off: srun's stdin closed ({exc})"
            ) from exc

    def lines(self) -> Iterable[str]:
        """stdout line by line until the step ends; then `stderr` holds the task's stderr
        and srun's own errors (its notes of a task's end left out)."""
        stdout = self._proc.stdout
        assert stdout is not None
        for raw in stdout:
            yield raw.rstrip(b"\n").decode(errors="replace")
        self._drain.join(timeout=TERM_GRACE)
        kept, errors = split_srun_errors(b"".join(self._err).decode(errors="replace"))
        self.stderr = (kept + "".join(f"{e}\n" for e in errors)).encode()

    def exit_status(self, timeout: float = 30.0) -> int | None:
        try:
            return self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            if self._proc.stdin:
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            _end(self._proc)


class SlurmSession(Connector):
    """A `transport.Connector` whose commands are srun steps on one node."""

    def __init__(self, host: Host, options: SSHOptions) -> None:
        self.host = host
        self.options = options
        self.round_trips = 0

    def open(self) -> SlurmSession:
        return self  # nothing to hold open: each command is its own step

    def close(self) -> None:
        return None

    def __enter__(self) -> SlurmSession:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def transport(self) -> Any:
        raise HostError(self.host.name, "no SSH transport: this host's connector is slurm")

    def _step(
        self,
        command: str,
        feed: Feed | None,
        timeout: float | None,
        stdout_to: Callable[[bytes], None] | None = None,
    ) -> tuple[str, str, int]:
        timeout = self.options.command_timeout if timeout is None else timeout
        self.round_trips += 1
        step = run_step(
            srun_argv([self.host]),
            srun_env(self.host, command),
            feed=feed,
            timeout=timeout,
            stdout_to=stdout_to,
        )
        stderr, srun_errors = split_srun_errors(step.stderr.decode(errors="replace"))
        stdout = step.stdout.decode(errors="replace")
        if step.status is None:
            raise CommandTimeout(
                self.host.name, command, -1, stderr + f"\ntimed out after {timeout}s"
            )
        if step.status != 0 and srun_errors:
            raise UnreachableError(self.host.name, "; ".join(srun_errors))
        return stdout, stderr, step.status

    def open_channel(self, command: str, *, bulk: bool = False) -> ProcessChannel:
        """The command as its own step, talked to while it runs (the relay's members)."""
        del bulk  # srun forwards stdin at its own pace; no window to size
        self.round_trips += 1
        return ProcessChannel(self.host.name, srun_argv([self.host]), srun_env(self.host, command))

    def follow(
        self, command: str, on_line: Callable[[bytes], None], cancelled: threading.Event
    ) -> None:
        """Stream a command's stdout line by line (`tail -F`) until it ends or `cancelled`."""
        self.round_trips += 1
        run_step(
            srun_argv([self.host]),
            srun_env(self.host, command),
            feed=None,
            timeout=None,
            on_line=on_line,
            cancel=cancelled,
        )

    def _execute(self, cmd: Prepared) -> tuple[str, str, int]:
        """One srun step; srun forwards stdin to the task."""

        def feed(write: Callable[[bytes], None]) -> None:
            if cmd.stdin:
                write(cmd.stdin)

        return self._step(cmd.full, feed, cmd.timeout, cmd.stdout_to)

    def _stream(self, command: str, feed: Feed, timeout: float | None) -> CommandResult:
        """srun forwards the fed bytes to the task's stdin."""
        out, err, status = self._step(command, feed, timeout)
        if status != 0:
            raise CommandFailed(self.host.name, command, status, err)
        return CommandResult(self.host.name, command, status, out, err)


# -- one step over many nodes ------------------------------------------------------------
#: each task runs the command with its output kept aside, then prints it base64-encoded
#: between markers: srun --label cuts lines longer than 1 KiB into labelled pieces, so
#: only short lines survive its multiplexing unambiguously
FANOUT_WRAPPER = (
    f'{NODE_VAR}="$SLURMD_NODENAME"; export {NODE_VAR}; '
    "t=$(mktemp -d) || exit 97; "
    'sh -s >"$t/out" 2>"$t/err"; rc=$?; '
    f'echo "{_MARK} node $SLURMD_NODENAME"; base64 "$t/out"; '
    f'echo "{_MARK} err"; base64 "$t/err"; '
    f'echo "{_MARK} end $rc"; rm -rf "$t"'
)


@dataclass
class NodeOutput:
    """What one node's task of a fan-out step printed, and when its end arrived."""

    node: str
    status: int
    stdout: str
    stderr: str
    received: float


def parse_fanout(lines: Iterable[tuple[str, str, float]]) -> dict[str, NodeOutput]:
    """(label, line, arrival time) of a --label step running FANOUT_WRAPPER -> per node."""
    per_label: dict[str, dict[str, Any]] = {}
    for label, line, at in lines:
        entry = per_label.setdefault(label, {"node": None, "part": None, "out": [], "err": []})
        if line.startswith(_MARK + " "):
            words = line.split()
            if words[1] == "node" and len(words) == 3:
                entry["node"], entry["part"] = words[2], "out"
            elif words[1] == "err":
                entry["part"] = "err"
            elif words[1] == "end" and len(words) == 3 and entry["node"]:
                entry["status"], entry["received"] = int(words[2]), at
                entry["part"] = None
            continue
        if entry["part"] in ("out", "err"):
            entry[entry["part"]].append(line.strip())
    result: dict[str, NodeOutput] = {}
    for entry in per_label.values():
        if entry["node"] and "status" in entry:
            result[entry["node"]] = NodeOutput(
                entry["node"],
                entry["status"],
                base64.b64decode("".join(entry["out"])).decode(errors="replace"),
                base64.b64decode("".join(entry["err"])).decode(errors="replace"),
                entry["received"],
            )
    return result


@dataclass
class FanoutResult:
    nodes: dict[str, NodeOutput]
    sent: float
    status: int | None
    srun_errors: list[str]


def fan_out_step(hosts: Sequence[Host], stdin: bytes, *, timeout: float) -> FanoutResult:
    """One srun over all `hosts`: `stdin` goes to every task (srun broadcasts it), where
    `sh -s` runs it; each node's output comes back on its own."""
    lines: list[tuple[str, str, float]] = []

    def on_line(raw: bytes) -> None:
        label, sep, text = raw.decode(errors="replace").partition(": ")
        if sep:
            lines.append((label.strip(), text, time.time()))

    sent = time.time()
    step = run_step(
        srun_argv(hosts, label=True),
        srun_env(hosts[0], FANOUT_WRAPPER),
        feed=lambda write: write(stdin),
        timeout=timeout,
        on_line=on_line,
    )
    _, errors = split_srun_errors(step.stderr.decode(errors="replace"))
    return FanoutResult(parse_fanout(lines), sent, step.status, errors)


def node_order(hosts: Sequence[Host]) -> list[str]:
    """Slurm's node table order (`scontrol show node -o` lists every node in it): the
    order in which srun numbers a step's nodes (SLURM_NODEID), not the order of -w."""
    from .errors import PlanError
    from .inventory_slurm import parse_node_records

    argv = ["scontrol", "show", "node", "-o"]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, env=srun_env(hosts[0], ""), timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PlanError(f"cannot ask Slurm its node order: {exc}", key="connector") from None
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip()[-300:]
        raise PlanError(f"`{' '.join(argv)}` failed: {why}", key="slurm_conf")
    return list(parse_node_records(proc.stdout))


def group_by_allocation(hosts: Iterable[Host]) -> list[list[Host]]:
    """Hosts that share one srun: same job and same SLURM_CONF, inventory order kept."""
    groups: dict[tuple[Any, Any], list[Host]] = {}
    for host in hosts:
        groups.setdefault((host.var.slurm_job, host.var.slurm_conf), []).append(host)
    return list(groups.values())


def parallel(work: Callable[[Host], Any], hosts: Sequence[Host], forks: int) -> list[Any]:
    """`work` on each host, at most `forks` at once, results in order."""
    with ThreadPoolExecutor(max_workers=max(1, min(forks, len(hosts)))) as pool:
        return list(pool.map(work, hosts))
