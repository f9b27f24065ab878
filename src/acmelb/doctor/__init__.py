"""Diagnosis: why HTTP-01 validation fails, seen from every vantage, and how to fix it.

Owns: the probe (``probe``: stdlib-only, shipped as one file to remote vantages;
``probe_async``: the same probe on an event loop), DNS as the CA sees it
(``resolution``), vantages (``vantage``), the checks in stages (``checks``), root cause
(``rootcause``), the one code table and findings (``codes``, ``findings``), the report
and its verdicts (``report``), the engine's shared steps (``engine``) and its two drivers
(``diagnose`` on threads, ``fleet`` on an event loop for many names), and ``explain``
(error messages of CAs and cert-manager mapped to codes).

May import: the ground floor only (``acmelb.errors``, ``acmelb.names``). It knows nothing
of Kubernetes or of the cluster: a source of targets with facts of its own (``acmelb.kube``)
registers the checks that read them into the runner (``checks.Runner.register``).
Imported by every other package.
"""
