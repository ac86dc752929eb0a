"""How the command line is parsed: flag values checked by type, every parse error exit 2.

Invoke types a flag by its default only (`tp: int` with no default arrives as a string)
and a value its type refuses escapes as a ValueError traceback with exit 1
(invoke/parser/argument.py `Argument.set_value`); its other parse errors (unknown flag,
missing argument) exit 1 too (invoke/program.py `Program.run`). Here a task's int/float
flags, read from its type hints, are converted while parsing: a bad value is one line
naming the flag and the type, exit 2, before any task runs. `namespace.build()` makes
every task a `Task`, so `invoke` in a checkout gets that too; `Program` (the installed
command) also turns invoke's other parse errors into one `error:` line and exit 2.
"""

from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import invoke
from invoke.exceptions import Exit, ParseError
from invoke.parser import Argument
from invoke.parser.context import to_flag

from ..errors import EXIT_BAD_INPUT

#: the words a parse error uses for each checked type
TYPE_WORDS: dict[type, str] = {int: "a whole number (int)", float: "a number (float)"}


def made_like(
    base: type,
    obj: Any,
    *,
    attributes: dict[str, str] | None = None,
    skip: tuple[str, ...] = (),
    **given: Any,
) -> dict[str, Any]:
    """The keyword arguments that make another `base` like `obj` (to rebuild invoke's
    objects as our subclasses): each parameter of `base.__init__` read from `obj`'s
    attribute of that name (or the one `attributes` maps it to), `given` ones as given."""
    names = [n for n in inspect.signature(base.__init__).parameters if n != "self"]
    renamed = attributes or {}
    copied = {n: getattr(obj, renamed.get(n, n)) for n in names if n not in skip}
    return {**copied, **given}


class TypedArgument(Argument):
    """A flag whose value must convert to `expects`; else exit 2 naming flag and type."""

    def __init__(self, *, expects: type, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.expects = expects

    @classmethod
    def of(cls, arg: Argument, expects: type) -> TypedArgument:
        kind = int if expects is int else arg.kind  # help shows --tp=INT
        return cls(expects=expects, **made_like(Argument, arg, skip=("name",), kind=kind))

    def set_value(self, value: Any, cast: bool = True) -> None:
        if not cast or not isinstance(value, str):
            super().set_value(value, cast)
            return
        try:
            converted = self.expects(value)
        except ValueError:
            raise bad_input(
                f"{to_flag(self.names[0])} takes {TYPE_WORDS[self.expects]}, got {value!r}"
            ) from None
        super().set_value(converted, cast=False)
        self.raw_value = value


def bad_input(message: str) -> Exit:
    """Invoke prints an Exit's message on stderr and exits with its code: here 2."""
    return Exit(f"error: {message}", code=EXIT_BAD_INPUT)


def checked_type(hint: Any) -> type | None:
    """int or float from a hint such as `int`, `float | None`, `Optional[int]`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kept = [h for h in typing.get_args(hint) if h is not type(None)]
        hint = kept[0] if len(kept) == 1 else None
    return hint if hint in TYPE_WORDS else None


def typed_arguments(args: list[Argument], hints: dict[str, Any]) -> list[Argument]:
    """The same arguments, the int/float ones (by hint or by default) checked."""
    typed: list[Argument] = []
    for arg in args:
        expects = checked_type(hints.get(arg.name)) or checked_type(arg.kind)
        scalar = arg.kind in (str, int, float) and not arg.incrementable
        typed.append(TypedArgument.of(arg, expects) if expects and scalar else arg)
    return typed


class Task(invoke.Task):
    """An Invoke task whose int/float flags are converted, and refused, while parsing."""

    @classmethod
    def of(cls, task: invoke.Task) -> Task:
        return cls(**made_like(invoke.Task, task, attributes={"default": "is_default"}))

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        # the function whose signature invoke reads (a node_task's carries the shared flags)
        signed = inspect.unwrap(self.body, stop=lambda f: hasattr(f, "__signature__"))
        hints = typing.get_type_hints(signed)
        return typed_arguments(super().get_arguments(ignore_unknown_help), hints)


def typed(collection: invoke.Collection) -> invoke.Collection:
    """Make every task of `collection` (and its sub-collections) a `Task`, in place."""
    for name, task in list(collection.tasks.items()):
        collection.tasks[name] = Task.of(task)
    for sub in collection.collections.values():
        typed(sub)
    return collection


class Program(invoke.Program):
    """The installed command's program over xpufleet's collection: every parse error is
    bad input, one `error:` line and exit 2 (invoke exits 1), nothing run."""

    def core_args(self) -> list[Argument]:
        return typed_arguments(super().core_args(), {})

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise bad_input(str(exc)) from None

    def parse_cleanup(self) -> None:
        try:
            super().parse_cleanup()
        except ParseError as exc:
            raise bad_input(str(exc)) from None


def main() -> None:
    """`xpufleet`: the console command `pip install .` gives, outside any checkout
    (Invoke's Program over the same collection tasks.py exposes, as Fabric ships `fab`)."""
    from importlib import metadata

    from . import namespace

    try:
        version = metadata.version("xpufleet")
    except metadata.PackageNotFoundError:
        version = "unknown"
    Program(namespace=namespace.build(), name="xpufleet", binary="xpufleet", version=version).run()
