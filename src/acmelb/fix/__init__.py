"""Fixes acmelb can print or apply: NAT loopback, LB pass-through config, Kubernetes."""
