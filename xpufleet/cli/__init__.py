"""Invoke tasks: thin wrappers that parse flags, call the library, print, and exit."""
