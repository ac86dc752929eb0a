"""~/.ssh/config (or the file the settings name) applied to hosts as OpenSSH applies it.

Looked up by the name ssh would be given (the host's ansible_host, else its inventory
name): `HostName`, `User`, `Port`, `IdentityFile`, `ProxyJump`, `UserKnownHostsFile`
and `ConnectTimeout` fill only what the inventory left unset (Ansible passes its own
values as -o options, which beat the config file). Jump hosts are looked up too, as
the `ssh -J` OpenSSH runs for them would. `-F FILE` / `-F none` in
ansible_ssh_common_args picks another file or none for the hosts that carry it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import paramiko

from .errors import InputError
from .host import Hop, Host
from .sshargs import ArgsError, check_address, parse_jump

#: the value of the `ssh_config` setting (or of `-F`) that means: read no ssh_config
NONE = "none"
#: jump chains longer than this are refused (a loop in ProxyJump lines, most likely)
MAX_HOPS = 4


def load(path: str | Path) -> paramiko.SSHConfig | None:
    """The parsed file, None if it does not exist; a bad file is bad input (exit 2)."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    try:
        return paramiko.SSHConfig.from_path(str(path))
    except Exception as exc:  # noqa: BLE001 - paramiko raises several kinds
        raise InputError(f"cannot parse ssh_config: {exc}", file=str(path)) from None


class Resolver:
    """Applies ssh_config files to hosts; each file is read once per task."""

    def __init__(self, default_path: str | None) -> None:
        self.default_path = default_path
        self._configs: dict[str, paramiko.SSHConfig | None] = {}

    def config_for(self, host: Host) -> tuple[paramiko.SSHConfig | None, str]:
        path = host.vars.get("ssh_config_file") or self.default_path or NONE
        if path == NONE:
            return None, path
        path = str(Path(path).expanduser())
        if path not in self._configs:
            self._configs[path] = load(path)
        return self._configs[path], path

    def apply(self, host: Host) -> Host:
        config, path = self.config_for(host)
        if config is None:
            return host
        return apply(host, config, path)


def _lookup(config: paramiko.SSHConfig, name: str, path: str) -> dict[str, object]:
    try:
        return dict(config.lookup(name))
    except Exception as exc:  # noqa: BLE001 - Match exec and friends
        raise InputError(f"cannot apply ssh_config to {name!r}: {exc}", file=path) from None


def _bad(path: str, key: str, message: str) -> InputError:
    return InputError(message, file=path, key=key)


def _known_hosts(value: object, path: str) -> str:
    files = str(value).split()
    if not files or files[0] in ("/dev/null", "none"):
        raise _bad(
            path,
            "UserKnownHostsFile",
            f"{value} throws host keys away; name a real file and run `invoke trust`",
        )
    return os.path.expanduser(files[0])


def _address(value: object, path: str) -> str:
    problem = check_address(value)
    if problem:
        raise _bad(path, "HostName", problem)
    return str(value)


def _jump(value: object, config: paramiko.SSHConfig, path: str, depth: int) -> tuple[Hop, ...]:
    try:
        hops = parse_jump(str(value))
    except ArgsError as exc:
        raise _bad(path, "ProxyJump", str(exc)) from None
    return resolve_hops(hops, config, path, depth)


def resolve_hops(
    hops: tuple[Hop, ...], config: paramiko.SSHConfig, path: str, depth: int = 0
) -> tuple[Hop, ...]:
    """Each jump host through the config (its own HostName/User/Port/keys/ProxyJump)."""
    resolved: list[Hop] = []
    for hop in hops:
        found = _lookup(config, hop.address, path)
        before: tuple[Hop, ...] = ()
        if found.get("proxyjump") and str(found["proxyjump"]).lower() != NONE:
            if depth + len(hops) >= MAX_HOPS:
                raise _bad(path, "ProxyJump", f"more than {MAX_HOPS} jump hosts (a loop?)")
            before = _jump(found["proxyjump"], config, path, depth + 1)
        identity = found.get("identityfile")
        resolved += [
            *before,
            Hop(
                address=_address(found.get("hostname", hop.address), path),
                port=hop.port or (int(str(found["port"])) if "port" in found else None),
                user=hop.user or (str(found["user"]) if "user" in found else None),
                key_file=hop.key_file
                or (os.path.expanduser(str(identity[0])) if identity else None),  # type: ignore[index]
                known_hosts=hop.known_hosts
                or (
                    _known_hosts(found["userknownhostsfile"], path)
                    if "userknownhostsfile" in found
                    else None
                ),
            ),
        ]
    if len(resolved) > MAX_HOPS:
        raise _bad(path, "ProxyJump", f"more than {MAX_HOPS} jump hosts (a loop?)")
    return tuple(resolved)


def apply(host: Host, config: paramiko.SSHConfig, path: str) -> Host:
    """`host` with what the config says for it, where the inventory said nothing."""
    found = _lookup(config, host.address, path)
    unset = set(host.unset)
    changes: dict[str, object] = {}
    hostname = found.get("hostname", host.address)
    if hostname != host.address:
        changes["address"] = _address(hostname, path)
    if "user" in unset and "user" in found:
        changes["user"] = str(found["user"])
        unset.discard("user")
    if "port" in unset and "port" in found:
        try:
            changes["port"] = int(str(found["port"]))
        except ValueError:
            raise _bad(path, "Port", f"not a port number: {found['port']!r}") from None
        unset.discard("port")
    identity = found.get("identityfile")
    if "key_file" in unset and identity:
        changes["key_file"] = os.path.expanduser(str(identity[0]))  # type: ignore[index]
        unset.discard("key_file")
    if "known_hosts" in unset and "userknownhostsfile" in found:
        known = _known_hosts(found["userknownhostsfile"], path)
        changes["vars"] = {**host.vars, "known_hosts": known}
        unset.discard("known_hosts")
    if "connect_timeout" in unset and "connecttimeout" in found:
        changes["connect_timeout"] = float(str(found["connecttimeout"]))
        unset.discard("connect_timeout")
    if "jump" in unset and found.get("proxyjump"):
        changes["jump"] = _jump(found["proxyjump"], config, path, 0)
        unset.discard("jump")
    elif host.jump:
        changes["jump"] = resolve_hops(host.jump, config, path)
    changes["unset"] = frozenset(unset)
    return dataclasses.replace(host, **changes)  # type: ignore[arg-type]


def apply_all(hosts: list[Host], default_path: str | None) -> list[Host]:
    """Every host through its ssh_config (`default_path` None or "none": only -F files)."""
    resolver = Resolver(default_path)
    return [resolver.apply(h) for h in hosts]
