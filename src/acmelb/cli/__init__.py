"""The ``acmelb`` command line: parsing, rendering and exit codes, no decisions.

``main`` (``acmelb.cli.main``) dispatches to one module per sub-command:
``register(subparsers)`` adds its parser and sets ``run``, which parses, calls the
library and renders (``render``: reports and status as text or JSON; ``common``: the
options several commands share). Modules here import only the standard library at top
level; the library modules they call are imported inside ``run``, so that
``acmelb --version`` stays fast.

May import: every package (``acme``, ``doctor``, ``kube``, ``cluster``, ``fix``, ``lab``)
and the ground floor. Imported by: ``acmelb.__main__`` and the ``acmelb`` program only.
"""
