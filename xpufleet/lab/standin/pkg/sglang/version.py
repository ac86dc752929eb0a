"""The stand-in's version: the fork it imitates, with a local label that says it is the lab's."""

__version__ = "0.4.3.post2+xpufleetlab"
