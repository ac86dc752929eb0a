"""Start one lab node (run as root by `Lab.up`, standard library only, no xpufleet import).

Usage: python3 -I -S nodeinit.py SPEC.json

In order: a new mount + UTS namespace (mounts private, so nothing leaks to the host),
the node's hostname, its bind mounts, a simulated /sys/class and /sys/module (a tmpfs
that re-binds every real entry and adds the simulated ones, moved over the original),
its sshd (which daemonizes), and a holder process (`sleep infinity`, renamed) that
keeps the namespace alive while sshd is stopped (dead-node fault). Prints one JSON line:
{"ok": true, "holder": PID, "mnt": INODE, "uts": INODE} or {"ok": false, "error": ...}.
Everything is a direct system call (ctypes), so 32 nodes start in well under a second
of CPU.
"""

import ctypes
import json
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 0x40000

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]


def _check(rc, what):
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _enc(value):
    return value.encode() if value is not None else None


def mount(source, target, fstype, flags, data=None):
    rc = libc.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data))
    _check(rc, f"mount {source} on {target}")


def bind(source, target, readonly):
    mount(source, target, None, MS_BIND)
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def write_entries(root, entries):
    """Simulated files: {relative path: {"content", "mode", "link"}}."""
    for rel, entry in sorted(entries.items()):
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if entry.get("link") is not None:
            os.symlink(entry["link"], path)
            continue
        with open(path, "w") as fh:
            fh.write(entry["content"])
        os.chmod(path, entry["mode"])


def stage_sys(part):
    """A tmpfs (mounted on part['stage'], private to this namespace) holding binds of every
    real entry of part['target'] plus the simulated entries, moved over part['target']."""
    target, stage, entries = part["target"], part["stage"], part["entries"]
    mount("tmpfs", stage, "tmpfs", 0, "mode=755")
    simulated = {rel.split("/", 1)[0] for rel in entries}
    for name in os.listdir(target):
        if name in simulated:
            continue
        real = os.path.join(target, name)
        mine = os.path.join(stage, name)
        if os.path.islink(real):
            os.symlink(os.readlink(real), mine)
        elif os.path.isdir(real):
            os.mkdir(mine)
            mount(real, mine, None, MS_BIND)
    write_entries(stage, entries)
    mount(stage, target, None, MS_MOVE)


def start_sshd(argv, log):
    """Run sshd (it daemonizes); its errors before logging starts go to the node log."""
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open("/dev/null", os.O_RDWR)
            err = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(err, 2)
            os.execve(argv[0], argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        finally:
            os._exit(127)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise OSError(0, f"sshd exited with status {os.waitstatus_to_exitcode(status)}; see {log}")


def start_holder(name):
    pid = os.fork()
    if pid == 0:
        try:
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.execv("/bin/sleep", [name, "infinity"])
        finally:
            os._exit(127)
    return pid


def main():
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    os.chdir("/")
    try:
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        hostname = spec["hostname"].encode()
        _check(libc.sethostname(hostname, len(hostname)), "sethostname")
        for source, target, readonly in spec["binds"]:
            bind(source, target, readonly)
        for part in spec["sys"]:
            stage_sys(part)
        if spec["sshd"]:
            start_sshd(spec["sshd"], spec["log"])
        holder = start_holder(spec["holder_name"])
    except OSError as exc:
        print(json.dumps({"ok": False, "error": str(exc)}), flush=True)
        return 1
    result = {
        "ok": True,
        "holder": holder,
        "mnt": os.stat(f"/proc/{holder}/ns/mnt").st_ino,
        "uts": os.stat(f"/proc/{holder}/ns/uts").st_ino,
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
