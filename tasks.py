"""xpufleet's Invoke entry point: `invoke --list` shows every task.

Each task lives in a small module of xpufleet.cli (flags -> library -> print -> exit
code); this file only assembles the collection.
"""

from invoke import Collection

from xpufleet.cli import namespace

ns: Collection = namespace.build()
