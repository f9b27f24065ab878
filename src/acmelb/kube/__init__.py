"""Everything read from Kubernetes objects, built on the doctor.

Owns: cert-manager Challenges and the objects around them as typed views (``challenges``,
``objects``: the Challenge -> solver Pod/Service/Ingress -> controller -> LoadBalancer
Service chain; ``gateway``: the Challenge -> solver HTTPRoute -> Gateway/ListenerSet and
listener -> the Gateway's Service chain), the diagnosis plan made from them (``plan``), the
KUBE stage's checks (``checks``, ``gateway_rules``, ``gateway_checks``) and the exact
patches that fix what they find (``patches``, ``gateway_patches``).

May import: ``acmelb.doctor`` and the ground floor (``acmelb.errors``, ``acmelb.names``).
Imported by: ``acmelb.fix`` and ``acmelb.cli``. The doctor knows nothing of this package:
a target read from Kubernetes carries its objects as opaque facts (``Target.facts``), and
``acmelb.kube.plan``, where such targets are made, registers the checks that read them
into the doctor's runner when it is imported.
"""
