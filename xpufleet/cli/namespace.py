"""Assembles every task module into the collection that tasks.py exposes."""

from __future__ import annotations

import importlib

from invoke import Collection

from .program import typed

#: (module in xpufleet.cli, sub-collection name or None for top-level tasks)
TASK_MODULES: list[tuple[str, str | None]] = [
    ("hosts", None),
    ("inventory", None),
    ("doctor", None),
    ("lab", "lab"),
    ("bench", None),
    ("provision", None),
    ("build", None),
    ("launch", None),
    ("demo", None),
    ("model", "model"),
]


def build() -> Collection:
    """Every task module in one collection; flags typed by their hints (`program.py`)."""
    ns = Collection()
    for module_name, collection_name in TASK_MODULES:
        module = importlib.import_module(f"xpufleet.cli.{module_name}")
        if collection_name:
            ns.add_collection(Collection.from_module(module, name=collection_name))
        else:
            for task in module.TASKS:
                ns.add_task(task)
    ns.configure({"xpufleet": {}})
    return typed(ns)
