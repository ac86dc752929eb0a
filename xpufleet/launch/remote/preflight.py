"""Preflight collective, run on every node before SGLang starts (shipped into the run dir).

One process per planned rank, with the rank's planned environment (CCL_LOCAL_RANK /
CCL_LOCAL_SIZE, which oneCCL reads when no MPI launcher started the ranks), first selects
the rank's own device as SGLang will (`torch.xpu.set_device(base_gpu_id + rank % per)`,
an index into what ZE_AFFINITY_MASK leaves visible; the fork's engine.py/model_runner.py),
so oneCCL sees one rank per device and takes its Level Zero IPC path, then joins ONE
torch.distributed group over exactly the planned topology: the store at the planned
dist-init address (rank 0 hosts it, as SGLang's rank 0 will), the planned backend
(xccl on xpu, gloo in the lab), an all_reduce of a known tensor checked on every rank,
then timed all_reduces per message size. Everything runs under one hard deadline, and
each rank reports how far it got and why it stopped, so the control node can name the
ranks that never joined and the likely cause instead of hanging like SGLang (sglang#7478).

Run by the launch script as `preflight.py run.json --then -m sglang.launch_server ARGS`:
the engine then starts in the same process (one torch import, not two) only if the
preflight passed; the per-rank report is in `preflight.json` either way. In that process
every child the engine starts with multiprocessing is recorded with the arguments it
was given (`record_spawns`): the supervisor ties each scheduler to its rank by it.
Standalone on purpose: Python standard library plus the node's torch; no xpufleet import.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import socket
import sys
import time
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from typing import Any

#: exit status of `--then` mode when the preflight failed (the engine never started)
PREFLIGHT_FAILED = 3
#: a connect that times out this many times in a row means packets are dropped
DROPPED_AFTER = 3
PROBE_TIMEOUT_S = 2.0
ITERATIONS = 5


def _kind_of(exc: BaseException) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    code = getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "unreachable"
    if code == errno.EADDRINUSE:
        return "addrinuse"
    if code == errno.EADDRNOTAVAIL:
        return "addrnotavail"
    if isinstance(exc, socket.gaierror):
        return "dns"
    return "error"


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Failed(Exception):
    def __init__(self, stage: str, kind: str, message: str) -> None:
        super().__init__(message)
        self.stage, self.kind, self.message = stage, kind, message


def probe(address: str, port: int, deadline: float) -> None:
    """Reach the store's port before torch does: tells a dropped packet from a closed port."""
    timeouts = 0
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(
                (address, port), timeout=min(PROBE_TIMEOUT_S, deadline - time.monotonic())
            ):
                return
        except OSError as exc:
            last = exc
            kind = _kind_of(exc)
            if kind == "timeout":
                timeouts += 1
                if timeouts >= DROPPED_AFTER:
                    break
            else:
                timeouts = 0
                time.sleep(0.2)
    kind = _kind_of(last) if last else "timeout"
    raise Failed("connect", kind, f"cannot reach the rendezvous store {address}:{port}: {last}")


def interface_addresses(nic: str | None) -> list[tuple[str, int]] | None:
    """(address, prefix) of every address on `nic` (every interface if None), from
    `ip -j addr`; None if iproute2 cannot tell."""
    import subprocess

    try:
        proc = subprocess.run(
            ["ip", "-j", "addr", "show", *(["dev", nic] if nic else [])],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return []
    try:
        links = json.loads(proc.stdout or "[]")
    except ValueError:
        return None
    return [
        (str(a["local"]), int(a.get("prefixlen", 32)))
        for link in links
        for a in link.get("addr_info", [])
        if "local" in a
    ]


def check_nic(cfg: dict[str, Any]) -> str | None:
    """Split networks: the planned NIC (GLOO_SOCKET_IFNAME = CCL_KVS_IFACE) must carry the
    rendezvous address on node 0 and an address in its subnet elsewhere, or gloo and
    oneCCL talk over another interface (or not at all). A reason, or None if fine."""
    import ipaddress

    nic = cfg["env"].get("GLOO_SOCKET_IFNAME")
    address = str(cfg["rendezvous"]["address"]).strip("[]")
    try:
        wanted = ipaddress.ip_address(address)
    except ValueError:
        return None  # a name: doctor's net.nic and the connect stage judge it
    if not nic:
        return None
    found = interface_addresses(nic)
    if found is None:
        return None
    if not found:
        return f"interface {nic} (nic) does not exist or has no address on this node"
    shown = ", ".join(f"{a}/{p}" for a, p in found)
    networks = [ipaddress.ip_interface(f"{a}/{p}") for a, p in found]
    if int(cfg.get("node_rank", 0)) == 0:
        if any(n.ip == wanted for n in networks):
            return None
        # lo answers for all of 127/8, unless another interface carries the address
        carried = [ipaddress.ip_address(a) for a, _ in interface_addresses(None) or []]
        if nic == "lo" and wanted in ipaddress.ip_network("127.0.0.0/8") and wanted not in carried:
            return None
        return f"nic {nic} ({shown}) does not carry the rendezvous address {address}"
    if any(wanted in n.network for n in networks):
        return None
    return f"nic {nic} ({shown}) has no address in the subnet of the rendezvous address {address}"


def select_device(cfg: dict[str, Any], rank_cfg: dict[str, Any]) -> dict[str, Any] | None:
    """`torch.xpu.set_device` on the rank's planned device, as SGLang's model runner does.
    None where the node shows no XPU and the plan does not want one (CPU plans)."""
    import torch

    index = int(rank_cfg.get("device", rank_cfg["local_rank"]))
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not xpu.is_available():
        if cfg.get("device") == "xpu":
            raise Failed("device", "nodevice", "torch sees no XPU device on this node")
        return None
    count = xpu.device_count()
    if index >= count:
        mask = cfg["env"].get("ZE_AFFINITY_MASK", "unset")
        raise Failed(
            "device",
            "nodevice",
            f"planned device xpu:{index} but torch sees {count} (ZE_AFFINITY_MASK={mask})",
        )
    xpu.set_device(index)
    props = xpu.get_device_properties(index)
    return {
        "index": index,
        "physical": rank_cfg.get("physical_device"),
        "current": int(xpu.current_device()),
        "name": str(getattr(props, "name", "")),
        "uuid": str(getattr(props, "uuid", "")),
    }


def run_rank(cfg: dict[str, Any], rank_cfg: dict[str, Any], deadline: float, out: Connection):
    """One rank: report each stage reached, then the result."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent()
    rank, world = int(rank_cfg["rank"]), int(cfg["world_size"])
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(f"preflight_r{rank}"[:15])
    except OSError:
        pass
    os.environ.update({k: str(v) for k, v in cfg["env"].items()})
    os.environ.update({k: str(v) for k, v in rank_cfg["env"].items()})
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world))
    result: dict[str, Any] = {"rank": rank, "stage": "start", "joined": False, "ok": False}

    def stage(name: str) -> None:
        result["stage"] = name
        out.send({"rank": rank, "stage": name})

    started = time.monotonic()
    try:
        import torch
        import torch.distributed as dist

        torch.set_num_threads(1)
        stage("device")
        result["device"] = select_device(cfg, rank_cfg)
        address, port = cfg["rendezvous"]["address"], int(cfg["rendezvous"]["port"])
        left = lambda: max(1.0, deadline - time.monotonic())  # noqa: E731
        stage("connect")
        try:
            if rank == 0:
                store = dist.TCPStore(
                    address, port, world, is_master=True, timeout=timedelta(seconds=left()),
                    wait_for_workers=False,
                )  # fmt: skip
            else:
                probe(address, port, deadline)
                store = dist.TCPStore(
                    address, port, world, is_master=False, timeout=timedelta(seconds=left())
                )
        except Failed:
            raise
        except Exception as exc:  # noqa: BLE001 - classify what torch raised
            text = str(exc)
            kind = "addrinuse" if "in use" in text or "EADDRINUSE" in text else _kind_of(exc)
            if "timed out" in text.lower() or "timeout" in text.lower():
                kind = "timeout"
            raise Failed("connect", kind, f"store at {address}:{port}: {text}") from exc
        store.set(f"joined/{rank}", socket.gethostname())
        result["joined"] = True
        stage("joined")
        if rank == 0:
            keys = [f"joined/{r}" for r in range(world)]
            try:
                store.wait(keys, timedelta(seconds=left()))
            except Exception as exc:  # noqa: BLE001 - the deadline passed
                missing = [r for r in range(world) if not store.check([f"joined/{r}"])]
                result["missing_ranks"] = missing
                raise Failed("join", "timeout", f"ranks {missing} never joined") from exc
        stage("init")
        backend = cfg["backend"]
        dist.init_process_group(
            backend,
            store=dist.PrefixStore("preflight", store),
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=left()),
        )
        device = f"xpu:{result['device']['index']}" if backend == "xccl" else "cpu"
        stage("allreduce")
        check = torch.full((1024,), float(rank + 1), device=device)
        dist.all_reduce(check)
        expected = world * (world + 1) / 2
        got = float(check[0].item())
        if not torch.all(check == expected).item():
            raise Failed("check", "mismatch", f"all_reduce gave {got}, expected {expected}")
        stage("timing")
        timings = []
        for size in cfg["sizes"]:
            tensor = torch.ones(max(1, size // 4), dtype=torch.float32, device=device)
            dist.all_reduce(tensor)  # warm-up (communicators are created lazily)
            dist.barrier()
            tic = time.perf_counter()
            for _ in range(ITERATIONS):
                dist.all_reduce(tensor)
            if device != "cpu":
                torch.xpu.synchronize()
            seconds = (time.perf_counter() - tic) / ITERATIONS
            algbw = tensor.numel() * 4 / seconds / 1e9
            busbw = algbw * 2 * (world - 1) / world if world > 1 else algbw
            timings.append(
                {
                    "bytes": tensor.numel() * 4,
                    "time_us": seconds * 1e6,
                    "algbw_gbps": algbw,
                    "busbw_gbps": busbw,
                }
            )
        dist.barrier()
        dist.destroy_process_group()
        if rank == 0:
            result["timings"] = timings
        result.update(ok=True, stage="done")
    except Failed as exc:
        result.update(error=exc.message, kind=exc.kind, stage=exc.stage)
    except Exception as exc:  # noqa: BLE001 - any other failure is reported, not raised
        text = f"{type(exc).__name__}: {exc}"
        kind = "timeout" if "timed out" in text.lower() or "timeout" in text.lower() else "error"
        result.update(error=text[-800:], kind=kind)
    result["elapsed_s"] = round(time.monotonic() - started, 3)
    out.send(result)
    out.close()
    os._exit(0)


def _log(message: str) -> None:
    """A line in the node's SGLang log format, so `invoke logs` shows it in order."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    print(f"[{stamp}] xpufleet preflight: {message}", file=sys.stderr, flush=True)


def _start_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def spawn_entry(
    pid: int, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """What the spawn record says of one started `multiprocessing.Process`: its pid, its
    start (clock ticks, against pid reuse), its target and the target's integer
    arguments by parameter name -- for the fork's `mp.Process(target=
    run_scheduler_process, args=(server_args, port_args, gpu_id, tp_rank, None, writer))`
    (entrypoints/engine.py) that is {"gpu_id": g, "tp_rank": r}."""
    import inspect

    named: dict[str, int] = {}
    if target is not None:
        try:
            bound = inspect.signature(target).bind_partial(*args, **kwargs)
            named = {k: v for k, v in bound.arguments.items() if type(v) is int}
        except (TypeError, ValueError):
            pass  # a target whose signature does not take these arguments: no names
    return {
        "pid": pid,
        "start": _start_ticks(pid),
        "target": f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}",
        "args": named,
    }


def record_spawns(path: str) -> None:
    """From now on, every process this process starts with multiprocessing is appended to
    `path` (one JSON line, `spawn_entry`) as soon as it has a pid: the parent's own word
    for which child got which rank, which neither start order nor the fork's process
    title (`sglang::scheduler`, no index) gives. Recording never stops the engine."""
    from multiprocessing.process import BaseProcess

    original = BaseProcess.start

    def start(self: BaseProcess) -> None:
        # start() drops _target/_args/_kwargs (CPython multiprocessing/process.py): read first
        given = (getattr(self, "_target", None), getattr(self, "_args", ()))
        kwargs = getattr(self, "_kwargs", {})
        original(self)
        try:
            line = json.dumps(spawn_entry(int(self.pid or 0), *given, kwargs)) + "\n"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except Exception as exc:  # noqa: BLE001 - never break the engine's start
            _log(f"could not record the process just started: {exc!r}")

    BaseProcess.start = start  # type: ignore[method-assign]


def run_preflight(run_json: str) -> dict[str, Any]:
    """Fork one process per planned rank of this node and collect their reports."""
    with open(run_json) as fh:
        cfg = json.load(fh)["preflight"]
    # torch is imported once, here; the ranks are forked from this process
    import torch  # noqa: F401
    import torch.distributed  # noqa: F401

    # the hard timeout covers the collective, not the import the engine needs anyway
    deadline = time.monotonic() + float(cfg["timeout"])

    ctx = multiprocessing.get_context("fork")
    readers: dict[Any, int] = {}
    procs: list[Any] = []
    reports: dict[int, dict[str, Any]] = {}
    wrong_nic = check_nic(cfg)
    for rank_cfg in cfg["ranks"] if wrong_nic is None else []:
        rank = int(rank_cfg["rank"])
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=run_rank, args=(cfg, rank_cfg, deadline, writer))
        proc.start()
        writer.close()
        readers[reader] = rank
        reports[rank] = {"rank": rank, "stage": "start", "joined": False, "ok": False}
        procs.append(proc)
    aborted = {"reason": ""}

    def on_term(signum: int, frame: object) -> None:
        aborted["reason"] = "aborted: another node failed"
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while readers and time.monotonic() < deadline + 3:
            for reader in wait(list(readers), timeout=0.5):
                rank = readers[reader]
                try:
                    message = reader.recv()
                except EOFError:
                    readers.pop(reader)
                    if not reports[rank].get("final"):
                        reports[rank].update(error="the rank process died", kind="crash")
                    continue
                reports[rank].update(message)
                if "ok" in message:
                    reports[rank]["final"] = True
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    for proc in procs:  # every rank has reported (or run out of time): none may linger
        proc.kill()
        proc.join(5)
    if wrong_nic is not None:
        for rank_cfg in cfg["ranks"]:
            rank = int(rank_cfg["rank"])
            reports[rank] = {
                "rank": rank, "stage": "nic", "joined": False, "ok": False,
                "kind": "wrong_nic", "error": wrong_nic,
            }  # fmt: skip
    for report in reports.values():
        if not report.get("final") and "error" not in report:
            reason = aborted["reason"] or f"hard timeout ({cfg['timeout']} s)"
            report.update(error=f"stopped at stage {report['stage']}: {reason}", kind="timeout")
            if aborted["reason"]:
                report["kind"] = "aborted"
        report.pop("final", None)
    doc = {
        "host": cfg.get("host"),
        "node_rank": cfg.get("node_rank"),
        "ok": all(r.get("ok") for r in reports.values()),
        "ranks": [reports[r] for r in sorted(reports)],
    }
    path = os.path.join(os.path.dirname(os.path.abspath(run_json)), "preflight.json")
    with open(path + ".tmp", "w") as fh:
        fh.write(json.dumps(doc) + "\n")
    os.replace(path + ".tmp", path)
    return doc


def main(argv: list[str]) -> int:
    """`preflight.py RUN_JSON`: the preflight alone (JSON on stdout).
    `preflight.py RUN_JSON --then -m MODULE ARGS...`: the preflight, then, in this same
    process (torch already imported), `python -m MODULE ARGS...` -- the engine starts
    only if every local rank passed, and pays for one torch import, not two."""
    run_json = argv[1]
    then = argv[2:]
    if then and (len(then) < 3 or then[:2] != ["--then", "-m"]):
        print(__doc__, file=sys.stderr)
        return 2
    _log("joining the planned group" if then else "starting")
    doc = run_preflight(run_json)
    if not then:
        print(json.dumps(doc), flush=True)
        return 0 if doc["ok"] else 1
    failed = [r for r in doc["ranks"] if not r.get("ok")]
    if failed:
        first = failed[0]
        _log(f"FAILED on rank {first['rank']} at {first.get('stage')}: {first.get('error')}")
        return PREFLIGHT_FAILED
    timings = (doc["ranks"][0].get("timings") or []) if doc["ranks"] else []
    detail = ", ".join(f"{t['bytes']} B busbw {t['busbw_gbps']:.3f} GB/s" for t in timings)
    _log(f"passed ({detail or 'all_reduce correct'}); starting {then[2]}")
    with open(run_json) as fh:
        record = json.load(fh).get("spawn_record")
    if record:
        record_spawns(os.path.join(os.path.dirname(os.path.abspath(run_json)), record))
    import runpy

    sys.argv = [then[2], *then[3:]]
    runpy.run_module(then[2], run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
