"""OpenSSH arguments as Ansible inventories carry them, and addresses as we accept them.

`ansible_ssh_common_args` / `ansible_ssh_extra_args` are command-line words for
`ssh` (parsed with shlex, as Ansible does). The options xpufleet honours become
connection settings; the ones that would weaken host-key checking are refused (bad
input, exit 2), and everything else is named so the caller can warn: an option is
never silently dropped. `ProxyJump` specs (`[user@]host[:port][,...]`) are parsed
here too, for the inventory and for ssh_config alike.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from dataclasses import dataclass, field

from .host import Hop

#: inventory variables holding ssh command-line words, in the order ssh sees them
ARGS_VARS = ("ansible_ssh_common_args", "ansible_ssh_extra_args")
#: variables whose value must be an address or a host name
ADDRESS_VARS = ("ansible_host", "ansible_ssh_host", "rendezvous_address", "sglang_host")

_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\$?$")
#: ssh flags that take an argument (ssh(1)); those we do not honour are named in a warning
_FLAGS_WITH_ARG = set("BbcDEeFIiJLlmOopQRSWw")
TRUST_HINT = "keep host-key checking on: run `invoke trust` to record the nodes' keys"


class ArgsError(ValueError):
    """An ssh argument xpufleet refuses; the inventory adds file, line and key."""


@dataclass
class SSHArgs:
    """What one variable's ssh words ask for (None: not set there)."""

    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    proxy_jump: str | None = None
    connect_timeout: float | None = None
    #: `-F FILE`: the ssh_config to read for this host ("none": no ssh_config at all)
    config_file: str | None = None
    #: options and flags xpufleet does not act on, as written (for a warning)
    unsupported: list[str] = field(default_factory=list)

    def fill_from(self, later: SSHArgs) -> None:
        """ssh keeps the FIRST value of an option: `later` only fills what is unset."""
        for name in ("user", "port", "identity_file", "known_hosts", "proxy_jump"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(later, name))
        for name in ("connect_timeout", "config_file"):
            if getattr(self, name) is None:
                setattr(self, name, getattr(later, name))
        self.unsupported += later.unsupported


def is_address(value: str) -> bool:
    """An IPv4/IPv6 address or a DNS-style host name: no space, newline or shell character."""
    if not isinstance(value, str) or not value:
        return False
    try:
        ipaddress.ip_address(value.split("%", 1)[0] if ":" in value else value)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(value))


def check_address(value: object) -> str | None:
    """Why `value` is not an address or host name (None when it is)."""
    if not isinstance(value, str) or not value.strip():
        return f"expected an address or host name, got {value!r}"
    if not is_address(value):
        return (
            f"not an address or host name: {value!r} (only letters, digits, '.', '-', '_' "
            "or an IP address; no spaces, newlines or shell characters)"
        )
    return None


def parse_jump(spec: str) -> tuple[Hop, ...]:
    """`[user@]host[:port][,[user@]host[:port]]` (or `ssh://user@host:port`) -> hops.

    `none` means no jump host (as in OpenSSH)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ArgsError(f"ProxyJump needs [user@]host[:port], got {spec!r}")
    if spec.strip().lower() == "none":
        return ()
    hops = []
    for part in spec.split(","):
        text = part.strip()
        text = text.removeprefix("ssh://")
        user, at, rest = text.rpartition("@")
        if not at:
            user, rest = "", text
        port = None
        match = re.match(r"^\[([^\]]+)\](?::(\d+))?$", rest)
        if match:
            address, port = match.group(1), match.group(2)
        elif rest.count(":") == 1:
            address, port = rest.split(":")
        else:
            address = rest
        if not is_address(address):
            raise ArgsError(f"ProxyJump host is not an address or host name: {part.strip()!r}")
        if user and not _USER.match(user):
            raise ArgsError(f"ProxyJump user is not a user name: {user!r}")
        if port is not None and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ArgsError(f"ProxyJump port is not a port number: {part.strip()!r}")
        hops.append(Hop(address, int(port) if port else None, user or None))
    return tuple(hops)


def _option(args: SSHArgs, text: str) -> None:
    """One `-o Key=Value` (or `Key Value`)."""
    match = re.match(r"^\s*([A-Za-z]+)\s*(?:=\s*|\s+)(.*?)\s*$", text)
    if not match:
        raise ArgsError(f"-o needs Key=Value, got {text!r}")
    key, value = match.group(1), match.group(2).strip("\"'")
    lower = key.lower()
    if lower == "stricthostkeychecking":
        if value.lower() in ("no", "off", "false"):
            raise ArgsError(
                f"StrictHostKeyChecking={value} turns host-key checking off; xpufleet "
                f"refuses to connect that way: remove it and {TRUST_HINT}"
            )
        if value.lower() == "accept-new":
            args.unsupported.append(f"StrictHostKeyChecking={value} (treated as yes)")
        return  # yes/ask: xpufleet always checks, unknown keys are refused
    if lower == "userknownhostsfile":
        files = value.split()
        if not files or any(f in ("/dev/null", "none") for f in files):
            raise ArgsError(
                f"UserKnownHostsFile={value} throws host keys away, which turns host-key "
                f"checking off: name a real file and {TRUST_HINT}"
            )
        args.known_hosts = args.known_hosts or files[0]
        if len(files) > 1:
            args.unsupported.append(f"UserKnownHostsFile beyond the first ({' '.join(files[1:])})")
    elif lower == "identityfile":
        args.identity_file = args.identity_file or value
    elif lower == "proxyjump":
        parse_jump(value)
        args.proxy_jump = args.proxy_jump or value
    elif lower == "port":
        if args.port is None:
            args.port = _port(value)
    elif lower == "user":
        _user(value)
        args.user = args.user or value
    elif lower == "connecttimeout":
        try:
            seconds = float(value)
        except ValueError:
            raise ArgsError(f"ConnectTimeout needs seconds, got {value!r}") from None
        if seconds <= 0:
            raise ArgsError(f"ConnectTimeout needs seconds > 0, got {value!r}")
        if args.connect_timeout is None:
            args.connect_timeout = seconds
    elif lower == "proxycommand":
        args.unsupported.append(f"{key} (write the jump host as ProxyJump or -J instead)")
    else:
        args.unsupported.append(f"{key}={value}")


def _port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ArgsError(f"not a port number (1-65535): {value!r}")
    return int(value)


def _user(value: str) -> None:
    if not _USER.match(value):
        raise ArgsError(f"not a user name: {value!r}")


def parse_ssh_args(value: object) -> SSHArgs:
    """ssh command-line words (one string, as Ansible has them) -> SSHArgs; ArgsError if bad."""
    if value is None:
        return SSHArgs()
    if not isinstance(value, str):
        raise ArgsError(f"expected a string of ssh arguments, got {type(value).__name__}")
    try:
        words = shlex.split(value)
    except ValueError as exc:
        raise ArgsError(f"cannot split into words: {exc}") from None
    args = SSHArgs()
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("-") or len(word) < 2:
            raise ArgsError(f"unexpected word {word!r} (only options belong here)")
        flag, attached = word[1], word[2:]
        if flag in _FLAGS_WITH_ARG:
            if attached:
                operand = attached
            elif i < len(words):
                operand = words[i]
                i += 1
            else:
                raise ArgsError(f"-{flag} needs a value")
            if flag == "o":
                _option(args, operand)
            elif flag == "J":
                parse_jump(operand)
                args.proxy_jump = args.proxy_jump or operand
            elif flag == "p":
                args.port = args.port or _port(operand)
            elif flag == "l":
                _user(operand)
                args.user = args.user or operand
            elif flag == "i":
                args.identity_file = args.identity_file or operand
            elif flag == "F":
                args.config_file = args.config_file or operand
            else:
                args.unsupported.append(f"-{flag} {operand}")
        else:
            # a cluster of flags without values (-qC, -T, -4 ...): none changes what we do
            args.unsupported.append(word)
    return args
