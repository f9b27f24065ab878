"""Fixes acmelb can print or apply: NAT loopback, LB pass-through config, Kubernetes.

Owns: NAT loopback rules (render, apply, verify, roll back: ``nat_loopback``, ``verify``),
TCP pass-through snippets for HAProxy and nginx (``lb_config``), and the changes for a
whole cluster's objects (``kube``, from the KUBE stage's rules and patches).

May import: ``acmelb.kube``, ``acmelb.doctor`` and the ground floor.
Imported by: ``acmelb.cli``.
"""
