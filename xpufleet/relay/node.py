# ruff: noqa: UP004, UP015, UP031
"""xpufleet relay, node side: runs ON A NODE under any python3 >= 3.6, standard library only.

Sent as `python3 -c SOURCE MODE` (never installed). Modes, each reading one JSON line
(and the relay a second one) on stdin and printing JSON event lines on stdout:

- `check`: which files of a manifest this node already holds. A file counts when its
  size matches and the node's own manifest records the same hash for the same size and
  mtime (stat only); with `verify`, or when the node has no record, the file is hashed
  (sha256, hashlib: present in every python3, and with the SHA extensions of current
  CPUs 2.5-3.5x faster than hashlib's blake2b: the relay hashes every byte on every
  node) and the record is written, so the next check is stat only again. Records made
  with another hash (an older xpufleet's blake2b-256) count as no record.
- `hash`: the manifest of a source directory (records reused while size+mtime hold).
- `relay`: one link of the chain/tree. The stream is the files to send, concatenated
  in a fixed order; every node knows the order and sizes, so a position in the stream
  is just a byte offset. The node reads the stream from stdin (the control node), from
  its own disk (the source node) or from the TCP connection its parent opens, writes the
  files it wants under a temporary name (size and hash checked, then an atomic rename)
  and forwards every block to its children while writing. A child that fails is
  reported and its children are adopted: they tell the new parent how far they got and
  the missing bytes are replayed from this node's disk, then the stream goes on.
"""

import fcntl
import hashlib
import json
import os
import queue
import select
import socket
import sys
import threading
import time

MANIFEST = ".xpufleet-manifest.json"
HASH = "sha256"
BLOCK = 1 << 20
PART = ".xpufleet-part"


EMIT = threading.Lock()


def emit(**event):
    line = json.dumps(event, sort_keys=True) + "\n"
    with EMIT:  # the writer thread emits too
        sys.stdout.write(line)
        sys.stdout.flush()


def hasher():
    return hashlib.sha256()


def hash_file(path):
    digest = hasher()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(BLOCK)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def load_manifest(directory):
    try:
        with open(os.path.join(directory, MANIFEST)) as handle:
            doc = json.load(handle)
        if isinstance(doc, dict) and isinstance(doc.get("files"), dict):
            if doc.get("hash") != HASH:  # recorded with another hash: rehash, then record
                doc.update({"hash": HASH, "files": {}})
            return doc
    except (OSError, ValueError):
        pass
    return {"format": 1, "hash": HASH, "files": {}}


def save_manifest(directory, doc):
    path = os.path.join(directory, MANIFEST)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as handle:
            json.dump(doc, handle, indent=1, sort_keys=True)
            handle.write("\n")
        os.replace(tmp, path)
    except OSError as exc:
        emit(event="warning", message="cannot write %s: %s" % (path, exc))


def record(path):
    stat = os.stat(path)
    return {"size": stat.st_size, "hash": hash_file(path), "mtime_ns": stat.st_mtime_ns}


def mount_of(path):
    """The mount holding `path` (fstype, source, root, point), from mountinfo; the same
    reading as doctor's probe (facts/remote_probe.py mount_of), both shipped standalone."""
    best = None
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        point = fields[4].replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best["point"])):
            best = {"point": point, "root": fields[3], "fstype": tail[0], "source": tail[1]}
    return best


def fs_identity(directory):
    """Where `directory` lives: its (or its nearest existing parent's) device, inode and
    mount, and the part of the path below that parent; two nodes with the same answer
    write into one directory (a shared file system), so it is staged once."""
    probe = directory
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)
    stat = os.stat(probe)
    vfs = os.statvfs(probe)
    return {
        "exists": os.path.isdir(directory),
        "dev": stat.st_dev,
        "ino": stat.st_ino,
        "mount": mount_of(probe),
        "below": os.path.relpath(directory, probe),
        "free": vfs.f_bavail * vfs.f_frsize,
    }


# -- check / hash ----------------------------------------------------------------------
def check(config):
    """Which files of `files` this node holds, verified; records new verifications."""
    directory = config["dir"]
    wanted = config["files"]
    doc = load_manifest(directory)
    known = doc["files"]
    have, need, hashed = [], [], []
    for name in sorted(wanted):
        entry = wanted[name]
        path = os.path.join(directory, name)
        try:
            stat = os.stat(path)
        except OSError:
            need.append(name)
            continue
        if stat.st_size != entry["size"]:
            need.append(name)
            continue
        mine = known.get(name) or {}
        trusted = (
            not config.get("verify")
            and mine.get("size") == stat.st_size
            and mine.get("mtime_ns") == stat.st_mtime_ns
        )
        if not trusted:
            mine = record(path)
            known[name] = mine
            hashed.append(name)
        (have if mine.get("hash") == entry["hash"] else need).append(name)
    if hashed and os.path.isdir(directory):
        save_manifest(directory, doc)
    out = {"have": have, "need": need, "hashed": hashed}
    out.update(fs_identity(directory))
    emit(event="check", **out)


def manifest_of(config):
    """The manifest of a source directory; unchanged files keep their recorded hash."""
    directory = config["dir"]
    doc = load_manifest(directory)
    known = doc["files"]
    files = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        stat = os.stat(path)
        mine = known.get(name) or {}
        if mine.get("size") != stat.st_size or mine.get("mtime_ns") != stat.st_mtime_ns:
            mine = record(path)
        files[name] = mine
    if files != known:
        doc["files"] = files
        doc["hash"] = HASH
        if os.access(directory, os.W_OK):
            save_manifest(directory, doc)
    emit(event="manifest", files=files, hash=HASH)


# -- relay -----------------------------------------------------------------------------
class Stream(object):
    """The files in stream order: which one covers a position, where it lives on disk."""

    def __init__(self, directory, files, want, source_dir):
        self.directory = directory
        self.files = files  # [{"name", "size", "hash"}]
        self.want = set(want)
        self.source_dir = source_dir
        self.starts = []
        total = 0
        for entry in files:
            self.starts.append(total)
            total += entry["size"]
        self.total = total
        self.done = set()  # names renamed into place

    def temp_path(self, index):
        return os.path.join(self.directory, "." + self.files[index]["name"] + PART)

    def path_of(self, index):
        """Where this node can read the file's bytes (never the temp name of another dir)."""
        name = self.files[index]["name"]
        if self.source_dir:
            return os.path.join(self.source_dir, name)
        if name in self.want and name not in self.done:
            return self.temp_path(index)
        return os.path.join(self.directory, name)

    def spans(self, start, end):
        """Bytes [start, end) of the stream as (file index, offset, count) pieces, each
        within one file and at most a block."""
        index = 0
        while start < end:
            while self.starts[index] + self.files[index]["size"] <= start:
                index += 1
            offset = start - self.starts[index]
            count = min(end - start, self.files[index]["size"] - offset, BLOCK)
            yield index, offset, count
            start += count

    def read_into(self, index, offset, view):
        """Fill `view` from file `index` at `offset` on this node's disk."""
        with open(self.path_of(index), "rb") as handle:
            handle.seek(offset)
            got = handle.readinto(view)
        if got != len(view):
            raise OSError("%s holds only %d bytes at %d" % (self.path_of(index), got or 0, offset))

    def read(self, start, end):
        """Bytes [start, end) of the stream from this node's disk, block by block."""
        for index, offset, count in self.spans(start, end):
            block = bytearray(count)
            self.read_into(index, offset, memoryview(block))
            yield block


class Writer(object):
    """Writes the wanted files as their bytes pass: temp name, hash, size, rename.

    A write that fails (disk full, permissions) fails THAT file only: it is reported at
    once with the node's own error, the rest of the file is skipped, and the node keeps
    forwarding the stream, so its children never wait on a node that cannot write."""

    def __init__(self, stream):
        self.stream = stream
        self.index = 0
        self.handle = None
        self.digest = None
        self.written = 0
        self.received = []
        self.failed = []
        self.reasons = {}
        self.skip = None  # index of the file whose write failed

    def _open(self):
        entry = self.stream.files[self.index]
        if entry["name"] in self.stream.want and self.handle is None and self.skip != self.index:
            try:
                self.handle = open(self.stream.temp_path(self.index), "wb")
            except OSError as exc:
                self._fail(exc)
                return
            self.digest = hasher()

    def _fail(self, exc):
        """This file cannot be written here: drop its temp file, say why, skip its bytes."""
        entry = self.stream.files[self.index]
        temp = self.stream.temp_path(self.index)
        if self.handle is not None:
            try:
                self.handle.close()
            except OSError:
                pass
            self.handle = None
        try:
            os.unlink(temp)
        except OSError:
            pass
        self.skip = self.index
        reason = "writing %s failed: %s" % (
            os.path.join(self.stream.directory, entry["name"]),
            exc.strerror or exc,
        )
        self.failed.append(entry["name"])
        self.reasons[entry["name"]] = reason
        emit(event="bad", name=entry["name"], reason=reason, write_error=True)

    def feed(self, pos, block):
        """Take `block` at stream position `pos` (blocks may span files)."""
        view = memoryview(block)
        while len(view):
            entry = self.stream.files[self.index]
            end = self.stream.starts[self.index] + entry["size"]
            if pos >= end:
                self._finish()
                continue
            self._open()
            count = min(len(view), end - pos)
            if self.handle is not None:
                try:
                    self.handle.write(view[:count])
                except OSError as exc:
                    self._fail(exc)
                else:
                    self.digest.update(view[:count])
                    self.written += count
            view = view[count:]
            pos += count
            if pos == end:
                self._finish()

    def _finish(self):
        entry = self.stream.files[self.index]
        if entry["name"] in self.stream.want and self.skip != self.index:
            self._open()  # an empty file
        if self.handle is not None:
            try:
                self.handle.close()
                self.handle = None
                temp = self.stream.temp_path(self.index)
                size = os.path.getsize(temp)
                digest = self.digest.hexdigest()
                if size != entry["size"] or digest != entry["hash"]:
                    os.unlink(temp)
                    self.failed.append(entry["name"])
                    emit(event="bad", name=entry["name"], size=size, hash=digest)
                else:
                    final = os.path.join(self.stream.directory, entry["name"])
                    os.replace(temp, final)
                    self.stream.done.add(entry["name"])
                    self.received.append(entry["name"])
                    emit(event="file", name=entry["name"], size=size)
            except OSError as exc:
                self._fail(exc)
        self.handle = None
        self.skip = None
        self.index += 1

    def flush(self):
        if self.handle is not None:
            try:
                self.handle.flush()
            except OSError as exc:
                self._fail(exc)

    def finish_empty_tail(self):
        while self.index < len(self.stream.files) and self.stream.files[self.index]["size"] == 0:
            self._finish()


class Background(object):
    """Hash and write off the forwarding path: the node forwards block k+1 to its children
    while block k is still being hashed and written (and file k finished and renamed
    while file k+1 streams in).

    The blocks live in a fixed set of buffers (`take` one, fill it, `feed` it): the
    writer hands each back once written. A fresh 1 MiB bytes object per recv cost the
    node a mmap, page faults on zeroed pages and a munmap every block (about a fifth of
    a node's CPU); bounded, so a slow disk slows the stream instead of filling memory.
    `flush` waits until everything queued is on disk."""

    def __init__(self, writer, depth=8):
        self.writer = writer
        self.queue = queue.Queue()
        self.free = queue.Queue()
        for _ in range(depth + 2):  # + the one being filled and the one being forwarded
            self.free.put(bytearray(BLOCK))
        self.crashed = None
        thread = threading.Thread(target=self._run)
        thread.daemon = True
        thread.start()

    def _run(self):
        while True:
            pos, view, buffer = self.queue.get()
            try:
                if self.crashed is None:
                    self.writer.feed(pos, view)
            except Exception as exc:  # a bug, not a disk error (those fail the file)
                self.crashed = exc
            finally:
                self.free.put(buffer)
                self.queue.task_done()

    def take(self):
        """An empty block buffer (waits while the writer holds them all)."""
        return self.free.get()

    def give_back(self, buffer):
        self.free.put(buffer)

    def feed(self, pos, view, buffer):
        """`view` (of `buffer`, from `take`) at stream position `pos`: written, then
        `buffer` goes back to the free set."""
        self.queue.put((pos, view, buffer))

    def flush(self):
        self.queue.join()
        if self.crashed is not None:
            raise OSError("the writer stopped: %r" % (self.crashed,))
        self.writer.flush()

    def finish_empty_tail(self):
        self.flush()
        self.writer.finish_empty_tail()

    def __getattr__(self, name):  # received, failed, written, reasons
        return getattr(self.writer, name)


def stdin_closed():
    """The control node closed this head's channel (seen without taking stream bytes)."""
    ready, _, _ = select.select([sys.stdin.buffer], [], [], 0)
    return bool(ready) and not sys.stdin.buffer.peek(1)


def recv_line(sock, limit=4096):
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            raise OSError("connection closed during the handshake")
        data += chunk
        if len(data) > limit:
            raise OSError("handshake line too long")
    return data.decode().strip()


class Child(object):
    def __init__(self, name, sock):
        self.name = name
        self.sock = sock


class Relay(object):
    def __init__(self, config, topology, server):
        self.config = config
        self.name = config["name"]
        self.token = config["token"]
        self.server = server
        self.stream = Stream(
            config["dir"], config["files"], config["want"], config.get("source_dir")
        )
        self.writer = Background(Writer(self.stream))
        self.pos = 0
        self.tree = topology["tree"]  # name -> [children names]
        self.endpoints = topology["endpoints"]  # name -> [address, port]
        self.bind = config.get("bind")
        self.children = []
        self.lost = []
        self.last_report = 0.0
        # a head fed by the control node has no stdin watcher (stdin is its stream): it
        # looks for the channel's end itself while it waits on a child
        self.cut = stdin_closed if config["upstream"] == "stdin" else (lambda: False)

    # children ---------------------------------------------------------------
    def connect(self, name, deadline):
        """Open the link to `name` and replay what it lacks from this node's disk."""
        if name not in self.endpoints:
            raise OSError("%s never started listening" % name)
        address, port = self.endpoints[name]
        while True:
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                if self.bind:
                    try:
                        sock.bind((self.bind, 0))
                    except OSError:
                        pass
                sock.settimeout(30)
                sock.connect((address, int(port)))
                sock.sendall((self.token + "\n").encode())
                have = int(recv_line(sock))
                break
            except (OSError, ValueError):
                sock.close()
                if time.time() > deadline or self.cut():
                    raise
                time.sleep(0.2)
        sock.settimeout(120)
        if have < self.pos:
            for block in self.stream.read(have, self.pos):
                sock.sendall(block)
        emit(event="link", child=name, replayed=max(0, self.pos - have))
        return Child(name, sock)

    def adopt(self, name, why):
        """`name` failed: name it, link its children to this node instead."""
        self.lost.append(name)
        emit(event="lost", child=name, at=self.pos, reason=why)
        self.writer.flush()
        for grandchild in self.tree.get(name, []):
            try:
                self.children.append(self.connect(grandchild, time.time() + 30))
            except (OSError, ValueError) as exc:
                self.adopt(grandchild, "cannot connect: %s" % exc)

    def send(self, block):
        """`block` (the bytes after `self.pos`) to every child; a child adopted on the way
        was replayed up to `self.pos` from disk, so it gets the block too."""
        sent = set()
        while True:
            todo = [c for c in self.children if id(c) not in sent]
            if not todo:
                return
            for child in todo:
                sent.add(id(child))
                try:
                    child.sock.sendall(block)
                except OSError as exc:
                    self.children.remove(child)
                    child.sock.close()
                    self.adopt(child.name, str(exc))

    # upstream ---------------------------------------------------------------
    def accept_parent(self, deadline):
        """Wait for a parent's link; tell it how far this node got."""
        while True:
            left = deadline - time.time()
            if left <= 0:
                raise OSError("no parent connected within the deadline")
            ready, _, _ = select.select([self.server], [], [], min(left, 1.0))
            if not ready:
                continue
            sock, _ = self.server.accept()
            sock.settimeout(120)
            try:
                if recv_line(sock) != self.token:
                    sock.close()
                    continue
                self.writer.flush()
                sock.sendall(("%d\n" % self.pos).encode())
                return sock
            except OSError:
                sock.close()

    def blocks(self):
        """The stream from this node's upstream, from `self.pos` on: (view, buffer) pairs,
        each `view` the bytes read into `buffer` (a block of the writer's set)."""
        upstream = self.config["upstream"]
        if upstream == "disk":
            for index, offset, count in self.stream.spans(0, self.stream.total):
                buffer = self.writer.take()
                view = memoryview(buffer)[:count]
                self.stream.read_into(index, offset, view)
                yield view, buffer
            return
        if upstream == "stdin":
            source = sys.stdin.buffer
            fill = getattr(source, "readinto1", None) or source.readinto
            while self.pos < self.stream.total:
                buffer = self.writer.take()
                count = fill(buffer)
                if not count:
                    raise OSError("stdin closed at %d of %d bytes" % (self.pos, self.stream.total))
                yield memoryview(buffer)[: min(count, self.stream.total - self.pos)], buffer
            return
        timeout = float(self.config.get("parent_timeout") or 120)
        sock = self.accept_parent(time.time() + timeout)
        while self.pos < self.stream.total:
            buffer = self.writer.take()
            try:
                count = sock.recv_into(buffer)
            except OSError:
                count = 0
            if not count:
                self.writer.give_back(buffer)
                sock.close()
                emit(event="parent_lost", at=self.pos)
                sock = self.accept_parent(time.time() + timeout)
                continue
            yield memoryview(buffer)[:count], buffer
        self.parent = sock

    def run(self):
        deadline = time.time() + 60
        for name in self.tree.get(self.name, []):
            try:
                self.children.append(self.connect(name, deadline))
            except (OSError, ValueError) as exc:
                self.adopt(name, "cannot connect: %s" % exc)
        self.parent = None
        self.writer.finish_empty_tail()
        for block, buffer in self.blocks():
            self.send(block)  # children first: the pipeline's latency is one block per hop
            self.writer.feed(self.pos, block, buffer)
            self.pos += len(block)
            now = time.time()
            if now - self.last_report > 0.25:
                self.last_report = now
                emit(event="progress", pos=self.pos, written=self.writer.written)
        self.writer.finish_empty_tail()
        self.writer.flush()
        # every child confirms it has everything; one that breaks now is adopted
        while self.children:
            child = self.children.pop(0)
            try:
                child.sock.settimeout(float(self.config.get("parent_timeout") or 120))
                ack = recv_line(child.sock)
                child.sock.close()
                if ack != "done":
                    raise OSError("child said %r" % ack)
            except OSError as exc:
                child.sock.close()
                self.adopt(child.name, "no confirmation: %s" % exc)
        write_manifest(self.stream, self.config.get("manifest") or {})
        if self.parent is not None:
            try:
                self.parent.sendall(b"done\n")
                self.parent.close()
            except OSError:
                pass
        emit(
            event="done",
            pos=self.pos,
            received=self.writer.received,
            failed=self.writer.failed,
            lost=self.lost,
            written=self.writer.written,
        )
        return 1 if self.writer.failed else 0


def write_manifest(stream, source):
    """The node's record of every file of the source manifest it now holds. Several
    relays (streams) may write into one directory at once: each updates the record
    under a lock on the directory (flock), so none drops another's files."""
    if not stream.want and not stream.done or not source.get("files"):
        return
    directory = stream.directory
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        update_manifest(stream, source)
    finally:
        os.close(fd)  # releases the lock


def update_manifest(stream, source):
    directory = stream.directory
    doc = load_manifest(directory)
    files = {}
    for name, entry in sorted((source.get("files") or {}).items()):
        path = os.path.join(directory, name)
        try:
            stat = os.stat(path)
        except OSError:
            continue
        mine = doc["files"].get(name) or {}
        if name in stream.done:
            mine = {"size": stat.st_size, "hash": entry["hash"], "mtime_ns": stat.st_mtime_ns}
        if mine.get("size") == stat.st_size and mine.get("mtime_ns") == stat.st_mtime_ns:
            files[name] = mine
    doc.update({"format": 1, "hash": HASH, "source": source.get("source"), "files": files})
    save_manifest(directory, doc)


def exit_on_eof():
    """The control node closed this node's channel (it was cut or gave up): stop now."""
    while sys.stdin.buffer.read(BLOCK):
        pass
    emit(event="error", message="the control node's channel closed")
    os._exit(4)


def relay(config):
    directory = config["dir"]
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory)
        # parts of a cut transfer (files not yet complete): those of this relay's files
        # and of files the source manifest no longer has; another stream's (a relay
        # writing into this directory at the same time) are its own
        mine = set(f["name"] for f in config["files"])
        known = (config.get("manifest") or {}).get("files") or {}
        for name in os.listdir(directory):
            base = name[1 : -len(PART)]
            if name.endswith(PART) and (base in mine or known and base not in known):
                os.unlink(os.path.join(directory, name))
    except OSError:
        pass  # each wanted file then fails with the node's own error; forwarding goes on
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((config.get("listen") or "0.0.0.0", 0))
    server.listen(8)
    emit(event="listen", port=server.getsockname()[1], pid=os.getpid())
    line = sys.stdin.buffer.readline()
    if not line:
        emit(event="error", message="no topology on stdin")
        return 2
    topology = json.loads(line.decode())
    if config["upstream"] != "stdin":
        watcher = threading.Thread(target=exit_on_eof)
        watcher.daemon = True
        watcher.start()
    try:
        return Relay(config, topology, server).run()
    except OSError as exc:
        emit(event="error", message="%s: %s" % (type(exc).__name__, exc))
        return 3


def main(argv):
    mode = argv[1] if len(argv) > 1 else ""
    line = sys.stdin.buffer.readline()
    config = json.loads(line.decode())
    if mode == "check":
        return check(config) or 0
    if mode == "hash":
        return manifest_of(config) or 0
    if mode == "relay":
        code = relay(config)
        # not sys.exit: the stdin watcher thread holds stdin's lock, and a normal shutdown
        # then waits a second for it and aborts (SIGABRT, "could not acquire lock")
        sys.stdout.flush()
        os._exit(code)
    emit(event="error", message="unknown mode %r" % mode)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
