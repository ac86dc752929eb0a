"""`invoke trust`: fetch host keys, show fingerprints, append unknown ones to known_hosts."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import sys
from concurrent.futures import ThreadPoolExecutor

import paramiko

from .errors import HostError
from .host import Host
from .jump import chain_of
from .results import CHANGED, FAIL, OK, HostReport, Result, TaskReport
from .transport import SSHOptions, known_hosts_for, known_hosts_name, scan_host_key


def sha256_fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's `SHA256:...` form, the one `ssh-keygen -lf` prints."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _scan(host: Host, options: SSHOptions) -> paramiko.PKey | HostError:
    try:
        return scan_host_key(host, host.connect_timeout or options.connect_timeout, options)
    except HostError as exc:
        return exc


def _levels(hosts: list[Host], options: SSHOptions) -> list[list[tuple[str, Host]]]:
    """(report name, host) by distance: jump hosts first (a node's key can only be fetched
    through a trusted bastion), each jump host once, then the nodes behind them."""
    levels: list[dict[str, Host]] = []
    for node in hosts:
        chain = chain_of(node, options)
        for depth, hop in enumerate(chain):
            name = f"jump {hop.login}"
            target = dataclasses.replace(hop, name=name, jump=node.jump[:depth])
            while len(levels) <= depth:
                levels.append({})
            levels[depth].setdefault(name, target)
        while len(levels) <= len(chain):
            levels.append({})
        levels[len(chain)][node.name] = node
    return [list(level.items()) for level in levels]


def trust_hosts(
    hosts: list[Host], options: SSHOptions, *, assume_yes: bool, forks: int = 32
) -> TaskReport:
    """Add each unknown host key after showing it; a changed key is reported, never replaced.

    Keys are fetched in parallel (`forks` at once); questions are asked one host at a time."""
    report = TaskReport("trust")
    for level in _levels(hosts, options):
        _trust_level(level, options, report, assume_yes=assume_yes, forks=forks)
    return report


def _trust_level(
    level: list[tuple[str, Host]],
    options: SSHOptions,
    report: TaskReport,
    *,
    assume_yes: bool,
    forks: int,
) -> None:
    with ThreadPoolExecutor(max_workers=min(max(1, forks), max(1, len(level)))) as pool:
        scanned = list(pool.map(lambda item: _scan(item[1], options), level))
    for (report_name, host), key in zip(level, scanned, strict=True):
        if isinstance(key, HostError):
            report.hosts[report_name] = HostReport(
                reachable=False, error=key.message, error_kind=key.kind
            )
            continue
        path = known_hosts_for(host, options)
        known = paramiko.HostKeys()
        if path.exists():
            known.load(str(path))
        name = known_hosts_name(host)
        fingerprint = sha256_fingerprint(key)
        entry = known.lookup(name) or {}
        existing = entry.get(key.get_name())
        if existing is not None and existing == key:
            result = Result("trust.hostkey", OK, f"{key.get_name()} {fingerprint} already trusted")
        elif existing is not None:
            result = Result(
                "trust.hostkey",
                FAIL,
                f"host key CHANGED: {fingerprint} differs from known_hosts; "
                f"remove the old entry for {name} by hand if the node was reinstalled",
            )
        else:
            question = f"{host.name} ({name}) {key.get_name()} {fingerprint} - trust? [y/N] "
            if assume_yes or (sys.stdin.isatty() and input(question).strip().lower() == "y"):
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as fh:
                    fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")
                result = Result("trust.hostkey", CHANGED, f"added {key.get_name()} {fingerprint}")
            else:
                result = Result(
                    "trust.hostkey", FAIL, f"not trusted: {key.get_name()} {fingerprint}"
                )
        report.hosts[report_name] = HostReport(results=[result])
