"""The load-balancer lab: network-namespace topologies, Pebble and DNS for tests and demos."""
