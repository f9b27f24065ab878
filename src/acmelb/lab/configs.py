"""Configuration text for the lab's parts: HAProxy, nginx, iptables rules, hosts files.

Pure functions of a Scenario, so every mode's configuration can be checked
(``haproxy -c``, ``nginx -t``) without building a lab.
"""

from __future__ import annotations

from pathlib import Path

from acmelb.lab.scenarios import ADDRESSES, OTHER_THUMBPRINT, Behaviour, Mode, Scenario

# Where acmelb serve listens when nginx fronts it with PROXY protocol on port 80.
RESPONDER_BEHIND_NGINX_PORT = 8080
# In no-backend mode the LB's pool points at this port, where no backend listens.
DEAD_BACKEND_PORT = 81
UPLINK = "up0"  # the LB's interface towards the public namespace
BRIDGE = "br0"  # the backend segment, in the LB namespace

_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>Welcome to app.acmelb.test</title></head><body>"
    + "<p>This catch-all page answers every path, as many sites do.</p>" * 40
    + "</body></html>"
)


def haproxy_config(scenario: Scenario) -> str:
    """HAProxy in the LB namespace, listening on the VIP (and the v6 VIP)."""
    mode = scenario.mode
    http = mode.haproxy_http
    lines = [
        "global",
        "    maxconn 512",
        "defaults",
        f"    mode {'http' if http else 'tcp'}",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    retries 1",
        "frontend vip",
        f"    bind {ADDRESSES.vip}:80",
    ]
    if scenario.ipv6:
        lines.append(f"    bind [{ADDRESSES.vip6}]:80 v6only")
    if mode is Mode.HAPROXY_HTTP_INTERCEPT:
        # What an LB with built-in Let's Encrypt support does: it answers every
        # challenge itself, for its own account.
        lines += [
            "    http-request return status 200 content-type text/plain "
            f'lf-string "%[path,field(4,/)].{OTHER_THUMBPRINT}" '
            "if { path_beg /.well-known/acme-challenge/ }",
        ]
    lines += ["    default_backend pool", "backend pool", "    balance roundrobin"]
    port = DEAD_BACKEND_PORT if mode is Mode.NO_BACKEND else 80
    for index, role in enumerate(scenario.backend_roles, start=1):
        options = []
        if mode.proxy_protocol:
            options.append("send-proxy")
        if index > 1 and not mode.balances:
            options.append("backup")  # b1 answers; the others are standby
        lines.append(f"    server {role} {ADDRESSES.backend(index)}:{port} {' '.join(options)}")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def lb_iptables(scenario: Scenario, *, ipv6: bool = False) -> str:
    """iptables-restore (or, with ``ipv6``, ip6tables-restore) input for the LB namespace."""
    mode = scenario.mode
    if ipv6:
        vip, backend, subnet = (f"{ADDRESSES.vip6}/128", f"[{ADDRESSES.backend6(1)}]:80",
                                ADDRESSES.backend6_subnet)
    else:
        vip, backend, subnet = (f"{ADDRESSES.vip}/32", f"{ADDRESSES.backend(1)}:80",
                                ADDRESSES.backend_subnet)
    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
    ]
    if mode in (Mode.DNAT, Mode.DNAT_LOOPBACK):
        for chain in ("PREROUTING", "OUTPUT"):
            nat.append(f"-A {chain} -d {vip} -p tcp --dport 80 "
                       f"-j DNAT --to-destination {backend}")
    if mode is Mode.DNAT_LOOPBACK:
        # The NAT loopback (hairpin) rule: a connection from the backend segment
        # that was DNATed back into it leaves with the LB's address as source.
        nat.append(f"-A POSTROUTING -s {subnet} -d {subnet} "
                   "-m conntrack --ctstate DNAT -j MASQUERADE")
    # The LB is also the backends' NAT gateway to the public side (to reach Pebble).
    nat.append(f"-A POSTROUTING -s {subnet} -o {UPLINK} -j MASQUERADE")
    nat.append("COMMIT")
    filter_table = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]",
                    ":OUTPUT ACCEPT [0:0]"]
    if mode is Mode.FIREWALL:
        filter_table.append(f"-A INPUT -i {UPLINK} -p tcp --dport 80 -j DROP")
    filter_table.append("COMMIT")
    return "\n".join(nat + filter_table) + "\n"


def shortcut_iptables(index: int, *, ipv6: bool = False) -> str:
    """kube-proxy's short-circuit on backend ``b<index>``: VIP:80 goes to itself, not the LB."""
    vip, own = (ADDRESSES.vip6, f"[{ADDRESSES.backend6(index)}]") if ipv6 else \
        (ADDRESSES.vip, ADDRESSES.backend(index))
    return "\n".join([
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
        f"-A OUTPUT -d {vip} -p tcp --dport 80 -j DNAT --to-destination {own}:80",
        "COMMIT",
    ]) + "\n"


def _nginx_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "${dollar}") + '"'


def nginx_locations(scenario: Scenario, behaviour: Behaviour) -> list[str]:
    """The ``location`` blocks that make nginx behave as ``behaviour``."""
    challenge = scenario.challenge_path
    if behaviour.runs_responder:
        return ["location / {",
                f"    proxy_pass http://127.0.0.1:{RESPONDER_BEHIND_NGINX_PORT};",
                "    proxy_set_header Host $http_host;",
                "}"]
    if behaviour is Behaviour.NOT_FOUND:
        return ["location / { return 404; }"]
    if behaviour is Behaviour.TRAILING_NEWLINE:
        return [f"location = {challenge} {{ return 200 "
                f"{_nginx_string(scenario.key_authorization + chr(10))}; }}",
                "location / { return 404; }"]
    if behaviour is Behaviour.HTML_PAGE:
        return ["location / {", "    default_type text/html;",
                f"    return 200 {_nginx_string(_HTML_PAGE)};", "}"]
    if behaviour is Behaviour.REDIRECT_HTTPS:
        return ["location / { return 301 https://$host$request_uri; }"]
    if behaviour is Behaviour.REDIRECT_BAD_PORT:
        return ["location / { return 302 http://$host:8080$request_uri; }"]
    if behaviour is Behaviour.REDIRECT_LOOP:
        return ["location / { return 302 http://$host$request_uri; }"]
    raise ValueError(f"{behaviour} is not served by nginx")


def nginx_config(scenario: Scenario, behaviour: Behaviour, workdir: Path) -> str:
    """A self-contained nginx.conf for one backend; everything it writes stays in ``workdir``."""
    listen_options = " proxy_protocol" if scenario.mode.proxy_protocol else ""
    listens = [f"    listen 80{listen_options};"]
    if scenario.ipv6:
        listens.append(f"    listen [::]:80 ipv6only=on{listen_options};")
    temp = workdir / "tmp"
    return "\n".join([
        "worker_processes 1;",
        f"pid {workdir / 'nginx.pid'};",
        f"error_log {workdir / 'error.log'} notice;",
        "events { worker_connections 256; }",
        "http {",
        f"    access_log {workdir / 'access.log'};",
        *(f"    {kind}_temp_path {temp / kind};"
          for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        "    default_type text/plain;",
        "    # nginx has no escape for '$' in strings; this variable stands in for it.",
        '    geo $dollar { default "$"; }',
        "    server {",
        *listens,
        "        server_name _;",
        *(f"        {line}" for line in nginx_locations(scenario, behaviour)),
        "    }",
        "}",
    ]) + "\n"


def hosts_file(scenario: Scenario, *, inside: bool = False) -> str:
    """/etc/hosts of a lab namespace: the name resolves to the VIP, as in public DNS.

    ``inside`` (a backend's) with ``split_horizon``: to b1's own address instead.
    """
    internal = inside and scenario.split_horizon
    v4 = ADDRESSES.backend(1) if internal else ADDRESSES.vip
    v6 = ADDRESSES.backend6(1) if internal else ADDRESSES.vip6
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    if scenario.ipv6:
        lines.append(f"{v6}\t{scenario.name}")
    lines.append(f"{v4}\t{scenario.name}")
    return "\n".join(lines) + "\n"


def resolv_conf(scenario: Scenario) -> str:
    """/etc/resolv.conf for every lab namespace: the lab's DNS server.

    Without it, lookups not answered by the hosts file (the AAAA of the name)
    would go to the host's resolver, which a lab namespace cannot reach, and
    wait out glibc's 5 s timeout.
    """
    return f"nameserver {ADDRESSES.public_host}\noptions timeout:1 attempts:1\n"


def dns_zone(scenario: Scenario) -> dict[str, object]:
    """The zone the lab's DNS server (Pebble's resolver) serves."""
    records: dict[str, list[str]] = {"A": [ADDRESSES.vip]}
    if scenario.ipv6:
        records["AAAA"] = [ADDRESSES.vip6]
    return {"names": {scenario.name: records}}
