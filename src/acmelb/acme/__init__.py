"""The CA side: getting and keeping certificates.

Owns: the ACME client (``ca``, on certbot's ``acme`` library), the issuance pipeline of
named, resumable steps (``issuance``), renewal settings and timing (``renewal``), the
certbot-compatible ``live/`` store with its atomic switch (``store``), the solvers that
present a token (``solvers``), the HTTP-01 responder (``responder``) and the self-check
policy that refuses to answer a challenge the doctor predicts will fail (``selfcheck``).

May import: ``acmelb.doctor`` (the self-check diagnoses each pending challenge) and the
ground floor (``acmelb.errors``, ``acmelb.names``, ``acmelb.version``).
Imported by: ``acmelb.cluster``, ``acmelb.lab`` and ``acmelb.cli``.
"""
