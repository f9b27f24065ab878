"""Verify a fix by fetching through the VIP from a vantage, with the same probe
``acmelb diagnose`` uses."""

from __future__ import annotations

from acmelb.fix.nat_loopback import Verifier


def vip_fetch_verifier(prefix: str | None, vip: str, port: int, timeout: float = 3.0) -> Verifier:
    """Any HTTP answer through the VIP proves the path works (a 404 is fine)."""
    from acmelb.doctor.vantage import CommandPrefix, Local, Role, Vantage, VantageFailure

    vantage: Vantage = CommandPrefix(Role.INSIDE, prefix) if prefix else Local(Role.INSIDE)
    host = f"[{vip}]" if ":" in vip else vip
    request = {
        "name": vip,
        "url": f"http://{host}:{port}/.well-known/acme-challenge/acmelb-fix-verify",
        "addresses": [vip],
        "proxy_protocol": "never",
        "options": {"connect_timeout": timeout, "read_timeout": timeout},
    }

    def verify() -> tuple[bool, str]:
        result = vantage.run(request, budget=timeout * 4 + 10)
        if isinstance(result, VantageFailure):
            return False, f"{vantage.label}: {result.reason}"
        final = result["attempts"][0]["final"]
        where = f"{host}:{port} from {vantage.label}"
        if final["outcome"] == "response":
            return True, f"{where}: HTTP {final['status']}"
        return False, f"{where}: {final['outcome']} {final.get('error') or ''}".strip()

    return verify
