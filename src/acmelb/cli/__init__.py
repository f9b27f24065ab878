"""One module per sub-command: ``register(subparsers)`` adds its parser and sets ``run``.

Modules here import only the standard library at top level; the library
modules they call are imported inside ``run``.
"""
