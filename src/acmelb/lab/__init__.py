"""The load-balancer lab: network-namespace topologies, Pebble and DNS for tests and demos.

::

    from acmelb.lab import Scenario, build

    with build(Scenario("dnat", backends=("responder", "responder"))) as lab:
        lab.fetch("pub")   # through the VIP from the internet: the key authorization
        lab.fetch("b1")    # the same URL from behind the LB: times out (no NAT loopback)

See docs/lab.md for the topology, the address plan and each mode's ground truth.
"""

from acmelb.lab.fetch import FetchResult
from acmelb.lab.processes import ProcessRecord
from acmelb.lab.scenarios import (
    ADDRESSES,
    LAB_NAME,
    LAB_THUMBPRINT,
    LAB_TOKEN,
    OTHER_THUMBPRINT,
    AddressPlan,
    Behaviour,
    Mode,
    Scenario,
)
from acmelb.lab.topology import (
    Lab,
    build,
    down_all,
    remove_orphan_namespaces,
    running_labs,
)

__all__ = [
    "ADDRESSES",
    "LAB_NAME",
    "LAB_THUMBPRINT",
    "LAB_TOKEN",
    "OTHER_THUMBPRINT",
    "AddressPlan",
    "Behaviour",
    "FetchResult",
    "Lab",
    "Mode",
    "ProcessRecord",
    "Scenario",
    "build",
    "down_all",
    "remove_orphan_namespaces",
    "running_labs",
]
