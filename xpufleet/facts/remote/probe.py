# ruff: noqa: UP004, UP015, UP021, UP022, UP031, UP041
"""xpufleet doctor probe: runs ON THE NODE under any python3 >= 3.6, prints one section per fact.

Sent over SSH on stdin (never installed). It gathers raw facts only; every parse and
judgement happens on the control node (xpufleet.facts / xpufleet.checks), so this file
stays small and the logic stays unit-tested. Rules: standard library only, no type
annotations newer than 3.6 allows, every tool run with a short timeout, and every
missing tool, file or permission reported as absent instead of raising.
The control node prepends `PARAMS` (this node's parameters), `FACTS` (each registered
fact's key, the expression here that gathers it, whether it runs in a thread or last)
and `BOUNDARY` (see xpufleet.facts.probe); the functions below are the vocabulary those
expressions use. The answer is one section per fact (xpufleet.facts.batch's format).
"""

import glob
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

SCHEMA = 1


def first_timestamp():
    """The node's clock when the probe's shell started (falls back to python's start)."""
    now = time.time()
    try:
        early = float(os.environ.get("XPUFLEET_PROBE_T0", ""))
    except ValueError:
        return now
    return early if 0 <= now - early < 60 else now


START = first_timestamp()
ERRORS = []
PARAMS = globals().get("PARAMS") or {}
FACTS = globals().get("FACTS") or []
BOUNDARY = globals().get("BOUNDARY") or "@@xpufleet-probe"


def note(where, exc):
    ERRORS.append("%s: %s: %s" % (where, type(exc).__name__, exc))


def read(path, limit=1 << 20):
    try:
        with open(path, "rb") as handle:
            return handle.read(limit).decode("utf-8", "replace")
    except Exception:
        return None


def which(name, extra_dirs=()):
    dirs = os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) + list(extra_dirs)
    for directory in dirs:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def run(argv, timeout, env=None):
    """One tool run: {"rc", "out", "err", "timeout"} or {"missing": true}."""
    exe = argv[0] if os.path.isabs(argv[0]) else which(argv[0])
    if exe is None:
        return {"missing": True}
    full_env = dict(os.environ)
    full_env.update(env or {})
    try:
        proc = subprocess.Popen(
            [exe] + list(argv[1:]),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
        )
    except Exception as exc:
        failure = "%s: %s" % (type(exc).__name__, exc)
        return {"missing": False, "rc": None, "out": "", "err": failure}
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except OSError:
        # a broken timed sleep (seen under libfaketime): the output is read, wait plainly
        out, err = proc.communicate()
        timed_out = False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except Exception:
            proc.kill()
        out, err = proc.communicate()
        timed_out = True
    return {
        "missing": False,
        "rc": None if timed_out else proc.returncode,
        "out": out.decode("utf-8", "replace")[-200000:],
        "err": err.decode("utf-8", "replace")[-4000:],
        "timeout": timed_out,
    }


class Background(object):
    """Run slow gatherers in threads so the probe takes as long as the slowest one."""

    def __init__(self):
        self.results = {}
        self.threads = []

    def start(self, key, func, *args):
        def target():
            try:
                self.results[key] = func(*args)
            except Exception as exc:
                note(key, exc)
                self.results[key] = {"probe_error": "%s: %s" % (type(exc).__name__, exc)}

        thread = threading.Thread(target=target)
        thread.daemon = True
        thread.start()
        self.threads.append(thread)

    def join(self, deadline):
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.results


# -- GPU, driver, runtime -------------------------------------------------------------
def drm_cards():
    cards = []
    for path in sorted(glob.glob("/sys/class/drm/card*")):
        name = os.path.basename(path)
        if not name[4:].isdigit():
            continue
        device = os.path.join(path, "device")
        cards.append(
            {
                "card": name,
                "vendor": (read(os.path.join(device, "vendor")) or "").strip() or None,
                "device": (read(os.path.join(device, "device")) or "").strip() or None,
                "uevent": read(os.path.join(device, "uevent")),
            }
        )
    return cards


def kernel_modules():
    modules = {}
    for name in ("i915", "xe"):
        base = "/sys/module/" + name
        present = os.path.isdir(base)
        version = (read(base + "/version") or "").strip() or None
        info = None
        if present and version is None:
            result = run(["modinfo", "-F", "version", name], 5)
            if result.get("rc") == 0:
                info = result["out"].strip() or None
        srcversion = (read(base + "/srcversion") or "").strip() or None
        modules[name] = {
            "present": present,
            "version": version,
            "modinfo_version": info,
            "srcversion": srcversion,
        }
    return modules


def opencl_icds():
    icds = {}
    for path in sorted(glob.glob("/etc/OpenCL/vendors/*.icd")):
        icds[os.path.basename(path)] = (read(path) or "").strip()
    return icds


def package_queries():
    names = PARAMS.get("packages") or []
    out = {}
    if which("dpkg-query"):
        out["dpkg"] = run(["dpkg-query", "-s"] + names, 10)
    elif which("dpkg"):
        out["dpkg"] = run(["dpkg", "-s"] + names, 10)
    if which("rpm"):
        out["rpm"] = run(["rpm", "-q", "--qf", "%{NAME} %{VERSION}-%{RELEASE}\\n"] + names, 10)
    return out


def oneapi_layout(root):
    layout = {"root": root, "exists": os.path.isdir(root), "setvars": False, "components": {}}
    if not layout["exists"]:
        return layout
    layout["setvars"] = os.path.isfile(os.path.join(root, "setvars.sh"))
    unified = {}
    try:
        entries = sorted(os.listdir(root))
    except Exception as exc:
        note("oneapi", exc)
        entries = []
    for entry in entries:
        path = os.path.join(root, entry)
        if not os.path.isdir(path):
            continue
        if entry[:1].isdigit():
            unified[entry] = os.path.isfile(os.path.join(path, "oneapi-vars.sh"))
            continue
        latest = os.path.join(path, "latest")
        link = None
        if os.path.islink(latest):
            try:
                link = os.readlink(latest)
            except Exception:
                link = None
        try:
            versions = sorted(
                v
                for v in os.listdir(path)
                if v[:1].isdigit() and os.path.isdir(os.path.join(path, v))
            )
        except Exception:
            versions = []
        layout["components"][entry] = {
            "latest": link,
            "latest_exists": os.path.isdir(latest),
            "versions": versions,
        }
    layout["unified"] = unified
    return layout


def gpu_tools(setvars):
    """xpu-smi and sycl-ls, each in its own thread; sycl-ls inside setvars when not on PATH."""
    tools = Background()
    hierarchy = {"ZE_FLAT_DEVICE_HIERARCHY": PARAMS.get("device_hierarchy") or "FLAT"}
    xpu_smi = which("xpu-smi")
    if xpu_smi:
        tools.start("xpu_smi_version", run, [xpu_smi, "-v"], 15)
        tools.start("xpu_smi_discovery_json", run, [xpu_smi, "discovery", "-j"], 20)
        tools.start("xpu_smi_discovery", run, [xpu_smi, "discovery"], 20)
    sycl_ls = which("sycl-ls")
    if sycl_ls:
        tools.start("sycl_ls", run, [sycl_ls], 30, hierarchy)
    elif setvars:
        script = 'sv=$1; set --; . "$sv" >/dev/null 2>&1; exec sycl-ls'
        tools.start("sycl_ls", run, ["sh", "-c", script, "sh", setvars], 45, hierarchy)
    found = tools.join(time.monotonic() + 60)
    found["paths"] = {"xpu-smi": xpu_smi, "sycl-ls": sycl_ls}
    return found


# -- Python environment -----------------------------------------------------------------
ENV_SNIPPET = r"""
import json, sys
out = {"python": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable,
       "packages": {}, "torch": None, "sqlite": None}
try:
    import sqlite3
    out["sqlite"] = sqlite3.sqlite_version
except Exception:
    pass
try:
    from importlib import metadata
    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        if name:
            out["packages"][name] = dist.version
except Exception as exc:
    out["packages_error"] = repr(exc)
try:
    import torch
    info = {"version": torch.__version__, "xpu_built": hasattr(torch, "xpu"),
            "xpu_version": getattr(torch.version, "xpu", None)}
    try:
        info["xpu_available"] = bool(torch.xpu.is_available())
        info["device_count"] = int(torch.xpu.device_count()) if info["xpu_available"] else 0
        devices = []
        for i in range(info["device_count"]):
            p = torch.xpu.get_device_properties(i)
            devices.append({"name": getattr(p, "name", None),
                            "total_memory": getattr(p, "total_memory", None),
                            "driver_version": getattr(p, "driver_version", None)})
        info["devices"] = devices
    except Exception as exc:
        info["xpu_error"] = repr(exc)
    try:
        import torch.distributed as dist
        if hasattr(dist, "is_xccl_available"):
            info["xccl"] = bool(dist.is_xccl_available())
        else:
            info["xccl"] = bool(dist.is_backend_available("xccl"))
    except Exception as exc:
        info["xccl_error"] = repr(exc)
    out["torch"] = info
except Exception as exc:
    out["torch_error"] = repr(exc)
if len(sys.argv) > 2:
    # xpufleet/facts/remote/imports.py: the modules launch imports, Triton's backend
    try:
        ns = {"ARGS": json.loads(sys.argv[2]), "__name__": "xpufleet_imports"}
        exec(sys.argv[1], ns)
        out["imports"] = ns["RESULT"]["imports"]
        out["triton"] = ns["RESULT"]["triton"]
    except Exception as exc:
        out["imports_error"] = repr(exc)
print("\n@@XPUFLEET-ENV@@" + json.dumps(out))
"""


def python_env(venv, setvars):
    python = os.path.join(venv, "bin", "python") if venv else None
    info = {"venv": venv, "exists": bool(venv) and os.path.isdir(venv or ""), "python": python}
    if not python or not os.path.exists(python):
        info["present"] = False
        return info
    info["present"] = True
    env = {"ZE_FLAT_DEVICE_HIERARCHY": PARAMS.get("device_hierarchy") or "FLAT"}
    imports = PARAMS.get("imports")
    code = globals().get("IMPORTS_PROBE")
    extra = [code, json.dumps(imports)] if imports and code else []
    if setvars:
        # setvars.sh reads "$@": the arguments are saved and cleared before sourcing it
        script = (
            'sv=$1 py=$2 code=$3 ic=$4 ia=$5; set --; . "$sv" >/dev/null 2>&1; '
            'if [ -n "$ic" ]; then exec "$py" -c "$code" "$ic" "$ia"; fi; exec "$py" -c "$code"'
        )
        result = run(["sh", "-c", script, "sh", setvars, python, ENV_SNIPPET] + extra, 90, env)
    else:
        result = run([python, "-c", ENV_SNIPPET] + extra, 90, env)
    marker = "@@XPUFLEET-ENV@@"
    out = result.get("out") or ""
    if marker in out:
        try:
            info["result"] = json.loads(out.rsplit(marker, 1)[1].strip().splitlines()[0])
        except Exception as exc:
            note("env", exc)
    if "result" not in info:
        info["error"] = (result.get("err") or out or "no output")[-1500:]
        info["rc"] = result.get("rc")
        info["timeout"] = result.get("timeout")
    return info


# -- system -----------------------------------------------------------------------------
def resolve(name):
    if not name:
        return None
    try:
        infos = socket.getaddrinfo(name, None, 0, socket.SOCK_STREAM)
    except Exception as exc:
        return {"error": str(exc), "addresses": []}
    seen = []
    for info in infos:
        addr = info[4][0]
        if addr not in seen:
            seen.append(addr)
    return {"addresses": seen}


def nic_facts(name):
    if not name:
        return None
    facts = {"name": name, "exists": os.path.exists("/sys/class/net/" + name)}
    result = run(["ip", "-j", "addr", "show", "dev", name], 5)
    if result.get("rc") == 0 and result["out"].strip():
        facts["ip_json"] = result["out"]
        return facts
    result = run(["ip", "-o", "addr", "show", "dev", name], 5)
    if result.get("rc") == 0 and result["out"].strip():
        facts["ip_text"] = result["out"]
        return facts
    facts["ioctl"] = ioctl_ipv4(name)
    return facts


def ioctl_ipv4(name):
    """Primary IPv4 address and netmask of an interface without the `ip` tool."""
    try:
        import fcntl

        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            req = struct.pack("256s", name[:15].encode())
            addr = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), 0x8915, req)[20:24])
            mask = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), 0x891B, req)[20:24])
        finally:
            sock.close()
        prefix = sum(bin(int(part)).count("1") for part in mask.split("."))
        return [{"family": "inet", "local": addr, "prefixlen": prefix}]
    except Exception as exc:
        return {"error": str(exc)}


def disk_facts(path):
    if not path:
        return None
    checked = path
    while checked and not os.path.exists(checked):
        parent = os.path.dirname(checked.rstrip("/")) or "/"
        if parent == checked:
            break
        checked = parent
    try:
        stat = os.statvfs(checked)
    except Exception as exc:
        return {"path": path, "checked": checked, "error": str(exc)}
    return {
        "path": path,
        "checked": checked,
        "free": stat.f_bavail * stat.f_frsize,
        "total": stat.f_blocks * stat.f_frsize,
        "exists": os.path.exists(path),
    }


def socket_inodes():
    """Listening TCP sockets: [{"addr", "port", "inode"}] from /proc/net/tcp{,6}."""
    listening = []
    for table, family in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 6)):
        text = read(table, 1 << 24) or ""
        for line in text.splitlines()[1:]:
            parts = line.split()
            if len(parts) < 10 or parts[3] != "0A":
                continue
            hexaddr, hexport = parts[1].split(":")
            listening.append(
                {"addr": decode_addr(hexaddr, family), "port": int(hexport, 16), "inode": parts[9]}
            )
    return listening


def decode_addr(hexaddr, family):
    raw = bytes.fromhex(hexaddr)
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    return socket.inet_ntop(socket.AF_INET6, b"".join(words))


def busy_facts(ports):
    """Processes holding /dev/dri nodes or listening on the SGLang/rendezvous ports."""
    listening = [s for s in socket_inodes() if s["port"] in ports]
    wanted = dict((s["inode"], s) for s in listening)
    own_ns = None
    try:
        own_ns = os.readlink("/proc/self/ns/mnt")
    except Exception:
        pass
    dri = []
    complete = True
    me = os.getpid()
    for proc in glob.glob("/proc/[0-9]*"):
        pid = int(proc.rsplit("/", 1)[1])
        if pid == me:
            continue
        try:
            fds = os.listdir(proc + "/fd")
        except Exception:
            complete = False
            continue
        ns = None
        try:
            ns = os.readlink(proc + "/ns/mnt")
        except Exception:
            pass
        for fd in fds:
            try:
                target = os.readlink(proc + "/fd/" + fd)
            except Exception:
                continue
            if target.startswith("/dev/dri/"):
                dri.append({"pid": pid, "path": target, "same_ns": ns == own_ns})
            elif target.startswith("socket:[") and target[8:-1] in wanted:
                wanted[target[8:-1]].setdefault("pids", []).append(
                    {"pid": pid, "same_ns": ns == own_ns}
                )
    for item in dri + [p for s in listening for p in s.get("pids", [])]:
        comm = read("/proc/%d/comm" % item["pid"])
        item["comm"] = comm.strip() if comm else None
        cmdline = read("/proc/%d/cmdline" % item["pid"], 4096)
        item["cmdline"] = cmdline.replace("\0", " ").strip()[:300] if cmdline else None
    seen = set()
    unique_dri = []
    for item in dri:
        if (item["pid"], item["path"]) not in seen:
            seen.add((item["pid"], item["path"]))
            unique_dri.append(item)
    return {"dri": unique_dri, "listen": listening, "complete": complete}


def rendezvous_facts(targets):
    """A TCP connect to every peer's rendezvous port, all at once (one timeout in total)."""
    if not targets:
        return None
    found = Background()
    for index, target in enumerate(targets):
        found.start(index, connect, target)
    results = found.join(time.monotonic() + float(PARAMS.get("connect_timeout") or 2.0) + 5)
    return [results.get(i) for i in range(len(targets)) if results.get(i)]


def connect(target):
    began = time.monotonic()
    timeout = float(PARAMS.get("connect_timeout") or 2.0)
    sock = None
    try:
        sock = socket.create_connection((target["address"], int(target["port"])), timeout)
        outcome, detail = "open", "connected"
    except socket.timeout:
        outcome, detail = "timeout", "no answer within %.1fs" % timeout
    except ConnectionRefusedError:
        outcome, detail = "refused", "connection refused (nothing listening yet)"
    except OSError as exc:
        outcome, detail = "error", str(exc)
    finally:
        if sock is not None:
            sock.close()
    return {
        "host": target.get("host"),
        "address": target["address"],
        "port": int(target["port"]),
        "result": outcome,
        "detail": detail,
        "seconds": round(time.monotonic() - began, 3),
    }


def access_facts():
    """What a non-root login may lack: render nodes' group, locked memory, writable paths."""
    import grp
    import pwd
    import resource

    uid = os.getuid()
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    nodes = []
    for path in sorted(glob.glob("/dev/dri/renderD*")):
        try:
            st = os.stat(path)
        except OSError as exc:
            nodes.append({"path": path, "error": str(exc)})
            continue
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        rw = os.access(path, os.R_OK | os.W_OK)
        nodes.append({"path": path, "group": group, "mode": st.st_mode & 0o777, "rw": rw})
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    paths = {}
    for name, path in sorted((PARAMS.get("paths") or {}).items()):
        checked = path
        while checked and checked != "/" and not os.path.exists(checked):
            checked = os.path.dirname(checked)
        paths[name] = {
            "path": path,
            "checked": checked,
            "writable": bool(checked) and os.access(checked, os.W_OK),
        }
    return {
        "uid": uid,
        "user": user,
        "become": bool(PARAMS.get("become")),
        "fi_provider": PARAMS.get("fi_provider"),
        "render_nodes": nodes,
        "memlock": [soft, hard],
        "paths": paths,
    }


def kernel_facts():
    """Kernel release, Yama's ptrace_scope and our uid (oneCCL's pidfd IPC needs them)."""
    return {
        "release": os.uname()[2],
        "ptrace_scope": read("/proc/sys/kernel/yama/ptrace_scope"),
        "uid": os.geteuid(),
    }


def fabric_facts(root):
    """`fi_info -l` (libfabric's providers), from PATH or oneAPI's bundled libfabric."""
    extra = [
        os.path.join(root, comp, "latest", "opt", "mpi", "libfabric", "bin")
        for comp in ("mpi", "ccl")
    ]
    tool = which("fi_info", extra)
    if tool is None:
        return {"tool": None}
    return {"tool": tool, "run": run([tool, "-l"], 20)}


def load_json(path):
    text = read(path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except Exception:
        return {"unreadable": True}


# -- model weights (stat only; shard headers read only when no manifest exists) ---------
MODEL_INDEX = "model.safetensors.index.json"


def mount_of(path):
    """The mount holding `path`: file-system type, source, mount point (from mountinfo)."""
    best = None
    real = os.path.realpath(path)
    for line in (read("/proc/self/mountinfo", 1 << 24) or "").splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        point = fields[4].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best["point"])):
            best = {
                "point": point,
                "root": fields[3],
                "fstype": tail[0],
                "source": tail[1],
                "majmin": fields[2],
            }
    return best


def safetensors_size(path):
    """Expected size of a safetensors file from its header: 8 + header + last data end."""
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return {"error": "shorter than the 8-byte header length"}
        length = struct.unpack("<Q", head)[0]
        if length > 100 << 20:
            return {"error": "header length %d is not plausible" % length}
        header = json.loads(handle.read(length).decode("utf-8"))
    end = 0
    for key, tensor in header.items():
        if key != "__metadata__":
            end = max(end, int(tensor["data_offsets"][1]))
    return {"expected": 8 + length + end}


def model_facts(path, manifest_name):
    """What is in the model directory: sizes (stat), manifest, index, mount identity."""
    if not path:
        return None
    out = {"path": path, "exists": os.path.isdir(path)}
    if not out["exists"]:
        return out
    try:
        stat = os.stat(path)
        out["dir"] = {"dev": stat.st_dev, "ino": stat.st_ino}
        out["mount"] = mount_of(path)
        names = os.listdir(path)
    except Exception as exc:
        out["error"] = "%s: %s" % (type(exc).__name__, exc)
        return out
    files = {}
    for name in names:
        try:
            entry = os.stat(os.path.join(path, name))
        except Exception:
            continue
        if not os.path.isdir(os.path.join(path, name)):
            files[name] = [entry.st_size, entry.st_mtime_ns]
    out["files"] = files
    out["manifest_text"] = read(os.path.join(path, manifest_name), 64 << 20)
    out["index_text"] = read(os.path.join(path, MODEL_INDEX), 64 << 20)
    if out["manifest_text"] is None:
        headers = {}
        for name in sorted(files):
            if name.endswith(".safetensors"):
                try:
                    headers[name] = safetensors_size(os.path.join(path, name))
                except Exception as exc:
                    headers[name] = {"error": "%s: %s" % (type(exc).__name__, exc)}
        out["headers"] = headers
    return out


def probe_info():
    return {"kind": "python", "schema": SCHEMA, "errors": ERRORS}


def python_info():
    return {"version": "%d.%d.%d" % sys.version_info[:3], "executable": sys.executable}


def clock_info():
    return {"start": START, "elapsed": time.time() - START}


ROOT = PARAMS.get("oneapi_root") or "/opt/intel/oneapi"
SETVARS = os.path.join(ROOT, "setvars.sh")
SETVARS = SETVARS if os.path.isfile(SETVARS) else None


def evaluate(expression):
    return eval(expression, globals())


def main():
    """Evaluate every fact's expression (slow ones in threads, `last` ones after the
    others), then print each value as JSON after its `<BOUNDARY> <index>` line."""
    values = {}
    slow = Background()
    for key, expression, background, _last in FACTS:
        if background:
            slow.start(key, evaluate, expression)
    for key, expression, background, last in FACTS:
        if not background and not last:
            try:
                values[key] = evaluate(expression)
            except Exception as exc:
                note(key, exc)
                values[key] = None
    values.update(slow.join(time.monotonic() + float(PARAMS.get("budget") or 100)))
    for key, expression, _background, last in FACTS:
        if last:
            values[key] = evaluate(expression)
    out = []
    for index, (key, _, _, _) in enumerate(FACTS):
        out.append("\n%s %d\n%s" % (BOUNDARY, index, json.dumps(values.get(key))))
    out.append("\n%s end\n" % BOUNDARY)
    sys.stdout.write("".join(out))
    sys.stdout.flush()


main()
