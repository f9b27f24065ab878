"""Cluster mode: one agent per instance behind the LB, sharing an etcd store.

Owns: the agent (a responder for every pending token, a lease-backed lock per certificate,
renewals, distribution of every new version to every instance, members as vantages of the
self-check), the etcd store and its fenced writes (``store``, ``kv``), sealed keys
(``secrets``), the agent's configuration (``config``), metrics, schedules and status.

May import: ``acmelb.acme`` (issuance, the live/ store, the responder, the self-check),
``acmelb.doctor`` (probes, vantages) and the ground floor.
Imported by: ``acmelb.lab`` and ``acmelb.cli``.
"""
