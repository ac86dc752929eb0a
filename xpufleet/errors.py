"""One exception tree for xpufleet; every low-level error is mapped into it in one place.

Each class carries the process exit code the SPEC assigns to it, so tasks never
guess: bad input is 2, an unreachable host is 3, anything else that failed is 1.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130


class XpufleetError(Exception):
    """Root of every error xpufleet raises on purpose."""

    exit_code = EXIT_FAILED
    #: the runbook section (heading slug) this kind of failure belongs to, if it has one;
    #: a task's runbook file + this anchor is the link its report prints
    anchor: str | None = None

    def __init_subclass__(
        cls, *, kind: str | None = None, anchor: str | None = None, **rest: object
    ) -> None:
        """`class PipFailed(CommandFailed, kind="pip", anchor="pip-conflicts")`: a kind of
        failure is declared in its class line; unset ones are inherited."""
        super().__init_subclass__(**rest)
        if kind is not None:
            cls.kind = kind  # type: ignore[attr-defined]
        if anchor is not None:
            cls.anchor = anchor


class InputError(XpufleetError):
    """Bad input (inventory, flags, profile, plan): refused before any host is touched."""

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.key = key
        super().__init__(self.__str__())

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        key = f"key '{self.key}': " if self.key else ""
        return f"{where}{key}{self.message}"


class InventoryError(InputError):
    """The inventory (or its group_vars/host_vars) is malformed or inconsistent."""


class PlanError(InputError):
    """The requested launch plan cannot work on this inventory."""


class HostError(XpufleetError):
    """Something went wrong on one host; carries the host's name."""

    #: short machine-readable kind, e.g. "refused", "auth", "command"
    kind = "error"

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        self.message = message
        super().__init__(f"{host}: {message}")


class UnreachableError(HostError, kind="unreachable"):
    """The host could not be reached or authenticated; exit code 3 if nothing else failed."""

    exit_code = EXIT_UNREACHABLE


class NameNotResolved(UnreachableError, kind="dns"):
    """The host's name does not resolve."""


class ConnectionRefused(UnreachableError, kind="refused"):
    """Nothing listens on the host's SSH port."""


class ConnectTimeout(UnreachableError, kind="timeout"):
    """The host did not answer within connect_timeout."""


class AuthenticationFailed(UnreachableError, kind="auth"):
    """The host refused our key or user."""


class HostKeyUnknown(UnreachableError, kind="hostkey-unknown"):
    """The host's key is not in known_hosts (run `invoke trust`)."""


class HostKeyChanged(UnreachableError, kind="hostkey-changed"):
    """The host's key differs from the one in known_hosts."""


class ConnectionLost(HostError, kind="lost", anchor="interrupted-transfer"):
    """The connection dropped while a command or transfer was running."""


class ProtocolError(HostError, kind="protocol"):
    """A node answered something xpufleet cannot read (not the JSON it asked for)."""


class Interrupted(HostError, kind="interrupted"):
    """Ctrl-C reached this host's work: its command was abandoned, its channel closed."""

    exit_code = EXIT_INTERRUPTED


class CommandFailed(HostError, kind="command"):
    """A remote command exited non-zero (or timed out)."""

    def __init__(self, host: str, command: str, exit_status: int, stderr: str) -> None:
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr
        tail = stderr_tail(stderr)
        detail = f": {tail}" if tail else ""
        super().__init__(host, f"command exited {exit_status}{detail}")

    @classmethod
    def of(cls, exc: CommandFailed) -> CommandFailed:
        """The same failure, filed as this more precise kind."""
        return cls(exc.host, exc.command, exc.exit_status, exc.stderr)


class CommandTimeout(CommandFailed, kind="command-timeout"):
    """A remote command ran past its timeout (and was ended)."""


class PipFailed(CommandFailed, kind="pip", anchor="pip-conflicts"):
    """pip refused to install (conflicts, a pin no index offers)."""


class TransferFailed(CommandFailed, kind="transfer", anchor="interrupted-transfer"):
    """The node's receiver refused a file (disk full, short write): nothing kept."""


class HashMismatch(TransferFailed, kind="hash-mismatch", anchor="wheel-hash-mismatch"):
    """The bytes that arrived do not have the sha256 the manifest promises."""


class LockHeld(HostError, kind="locked", anchor="lock-held"):
    """Another xpufleet run holds the node's lock."""


class BecomeFailed(HostError, kind="become", anchor="sudo-needs-a-password"):
    """sudo would not run a privileged step (no password given, or a wrong one)."""


def stderr_tail(text: str, lines: int = 5, limit: int = 600) -> str:
    """Last few non-empty lines of stderr, for one-line messages."""
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)[-limit:]


class LockFailed(XpufleetError):
    """Resolving or downloading the closed environment (the lock) failed; pip's words
    are in the message. Nothing was changed on any host."""
