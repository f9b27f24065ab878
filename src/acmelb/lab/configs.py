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
    ]
    if scenario.cluster:
        # A connection refused by a dead instance is retried on another one.
        lines.append("    option redispatch")
    lines += ["frontend vip", f"    bind {ADDRESSES.vip}:80"]
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
    if scenario.cluster:
        # TLS ends on the instances: TCP pass-through of 443, balanced like port 80.
        lines += ["frontend vip443", f"    bind {ADDRESSES.vip}:443"]
        if scenario.ipv6:
            lines.append(f"    bind [{ADDRESSES.vip6}]:443 v6only")
        lines += ["    default_backend pool443", "backend pool443", "    balance roundrobin"]
        for index, role in enumerate(scenario.backend_roles, start=1):
            backup = " backup" if index > 1 and not mode.balances else ""
            lines.append(f"    server {role} {ADDRESSES.backend(index)}:443{backup}")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def lb_iptables(scenario: Scenario, *, ipv6: bool = False) -> str:
    """iptables-restore (or, with ``ipv6``, ip6tables-restore) input for the LB namespace."""
    mode = scenario.mode
    if ipv6:
        vip, backend, subnet = (
            f"{ADDRESSES.vip6}/128",
            f"[{ADDRESSES.backend6(1)}]:80",
            ADDRESSES.backend6_subnet,
        )
    else:
        vip, backend, subnet = (
            f"{ADDRESSES.vip}/32",
            f"{ADDRESSES.backend(1)}:80",
            ADDRESSES.backend_subnet,
        )
    nat = [
        "*nat",
        ":PREROUTING ACCEPT [0:0]",
        ":INPUT ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
        ":POSTROUTING ACCEPT [0:0]",
    ]
    if mode in (Mode.DNAT, Mode.DNAT_LOOPBACK):
        for chain in ("PREROUTING", "OUTPUT"):
            nat.append(f"-A {chain} -d {vip} -p tcp --dport 80 -j DNAT --to-destination {backend}")
    if mode is Mode.DNAT_LOOPBACK:
        # The NAT loopback (hairpin) rule: a connection from the backend segment
        # that was DNATed back into it leaves with the LB's address as source.
        nat.append(
            f"-A POSTROUTING -s {subnet} -d {subnet} -m conntrack --ctstate DNAT -j MASQUERADE"
        )
    # The LB is also the backends' NAT gateway to the public side (to reach Pebble).
    nat.append(f"-A POSTROUTING -s {subnet} -o {UPLINK} -j MASQUERADE")
    nat.append("COMMIT")
    filter_table = [
        "*filter",
        ":INPUT ACCEPT [0:0]",
        ":FORWARD ACCEPT [0:0]",
        ":OUTPUT ACCEPT [0:0]",
    ]
    if mode is Mode.FIREWALL:
        filter_table.append(f"-A INPUT -i {UPLINK} -p tcp --dport 80 -j DROP")
    filter_table.append("COMMIT")
    return "\n".join(nat + filter_table + _blocked_sources(scenario, ipv6)) + "\n"


def _blocked_sources(scenario: Scenario, ipv6: bool) -> list[str]:
    """A source allowlist gone wrong: port 80 dropped for some public-side networks, before
    any NAT (the raw table), whatever the LB mode."""
    if ipv6 or not scenario.blocked:
        return []
    raw = ["*raw", ":PREROUTING ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]"]
    for role in scenario.blocked:
        source = scenario.source_address(role)
        raw.append(f"-A PREROUTING -s {source}/32 -p tcp --dport 80 -j DROP")
    raw.append("COMMIT")
    return raw


def shortcut_iptables(index: int, *, ipv6: bool = False) -> str:
    """kube-proxy's short-circuit on backend ``b<index>``: VIP:80 goes to itself, not the LB."""
    vip, own = (
        (ADDRESSES.vip6, f"[{ADDRESSES.backend6(index)}]")
        if ipv6
        else (ADDRESSES.vip, ADDRESSES.backend(index))
    )
    return (
        "\n".join(
            [
                "*nat",
                ":PREROUTING ACCEPT [0:0]",
                ":INPUT ACCEPT [0:0]",
                ":OUTPUT ACCEPT [0:0]",
                ":POSTROUTING ACCEPT [0:0]",
                f"-A OUTPUT -d {vip} -p tcp --dport 80 -j DNAT --to-destination {own}:80",
                "COMMIT",
            ]
        )
        + "\n"
    )


def _nginx_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "${dollar}") + '"'


def nginx_locations(scenario: Scenario, behaviour: Behaviour) -> list[str]:
    """The ``location`` blocks that make nginx behave as ``behaviour``."""
    challenge = scenario.challenge_path
    if behaviour.runs_responder:
        return [
            "location / {",
            f"    proxy_pass http://127.0.0.1:{RESPONDER_BEHIND_NGINX_PORT};",
            "    proxy_set_header Host $http_host;",
            "}",
        ]
    if behaviour is Behaviour.NOT_FOUND:
        return ["location / { return 404; }"]
    if behaviour is Behaviour.TRAILING_NEWLINE:
        return [
            f"location = {challenge} {{ return 200 "
            f"{_nginx_string(scenario.key_authorization + chr(10))}; }}",
            "location / { return 404; }",
        ]
    if behaviour is Behaviour.HTML_PAGE:
        return [
            "location / {",
            "    default_type text/html;",
            f"    return 200 {_nginx_string(_HTML_PAGE)};",
            "}",
        ]
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
    return (
        "\n".join(
            [
                "worker_processes 1;",
                f"pid {workdir / 'nginx.pid'};",
                f"error_log {workdir / 'error.log'} notice;",
                "events { worker_connections 256; }",
                "http {",
                f"    access_log {workdir / 'access.log'};",
                *(
                    f"    {kind}_temp_path {temp / kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                ),
                "    default_type text/plain;",
                "    # nginx has no escape for '$' in strings; this variable stands in for it.",
                '    geo $dollar { default "$"; }',
                "    server {",
                *listens,
                "        server_name _;",
                *(f"        {line}" for line in nginx_locations(scenario, behaviour)),
                "    }",
                "}",
            ]
        )
        + "\n"
    )


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
    return {"names": {name: records for name in (scenario.name, *scenario.dns_names)}}


def _tls_listens(ipv6: bool) -> list[str]:
    return ["listen 443 ssl", *(["listen [::]:443 ssl ipv6only=on"] if ipv6 else [])]


def tls_nginx_config(workdir: Path, *, ipv6: bool = False) -> str:
    """nginx.conf of a backend's TLS server on 443; everything it writes stays in ``workdir``.

    The sites (one per installed certificate) are in ``sites.conf``, which the
    deploy hook (``tls_deploy_hook``) rewrites. A name without a site gets no
    certificate at all (``ssl_reject_handshake``): a client sees a failed
    handshake, never a placeholder that could be taken for the real one.
    """
    temp = workdir / "tmp"
    return (
        "\n".join(
            [
                "worker_processes 1;",
                f"pid {workdir / 'nginx.pid'};",
                f"error_log {workdir / 'error.log'} notice;",
                "events { worker_connections 512; }",
                "http {",
                f"    access_log {workdir / 'access.log'};",
                *(
                    f"    {kind}_temp_path {temp / kind};"
                    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
                ),
                "    default_type text/plain;",
                "    server_names_hash_bucket_size 128;",
                "    server {",
                *(f"        {listen} default_server;" for listen in _tls_listens(ipv6)),
                "        ssl_reject_handshake on;",
                "    }",
                f"    include {workdir / 'sites.conf'};",
                "}",
            ]
        )
        + "\n"
    )


def tls_deploy_hook(workdir: Path, live: Path, *, ipv6: bool = False) -> str:
    """The deploy hook of a backend's TLS server: a POSIX sh script.

    It writes one nginx site per lineage in ``live`` that has ``fullchain.pem``
    and ``privkey.pem`` (server names: the certificate's DNS names, read with
    ``openssl x509`` only when the certificate changed; the lineage name if it
    has none), checks the configuration (``nginx -t``), sends SIGHUP to the
    master and returns once the master has started workers on the new
    configuration and the old ones stopped accepting (at most 5 s). Shell, not
    Python: an agent fleet runs it once per certificate and instance, and it
    costs a few milliseconds.
    """
    listens = "\n".join(f'        echo "        {listen};"' for listen in _tls_listens(ipv6))
    return f"""#!/bin/sh
# acmelb lab: deploy hook of the TLS server (nginx on 443) of this backend.
set -u
work='{workdir}'
live='{live}'
mkdir -p "$work/names"
: > "$work/sites.conf.tmp"
for dir in "$live"/*/; do
    lineage=$(basename "$dir")
    chain="$live/$lineage/fullchain.pem"
    key="$live/$lineage/privkey.pem"
    [ -f "$chain" ] && [ -f "$key" ] || continue
    cache="$work/names/$lineage"
    if ! [ "$cache" -nt "$chain" ]; then
        openssl x509 -noout -ext subjectAltName -in "$chain" 2>/dev/null \\
            | tr ',' '\\n' | sed -n 's/^ *DNS://p' | tr '\\n' ' ' > "$cache.tmp"
        mv "$cache.tmp" "$cache"
    fi
    names=$(cat "$cache")
    [ -n "$names" ] || names="$lineage"
    {{
        echo "    server {{"
{listens}
        echo "        server_name $names;"
        echo "        ssl_certificate $chain;"
        echo "        ssl_certificate_key $key;"
        echo '        location / {{ return 200 "$ssl_server_name"; }}'
        echo "    }}"
    }} >> "$work/sites.conf.tmp"
done
mv "$work/sites.conf.tmp" "$work/sites.conf"
if ! out=$(nginx -t -q -e "$work/error.log" -c "$work/nginx.conf" 2>&1); then
    echo "acmelb lab deploy hook: nginx refused the new configuration: $out" >&2
    exit 1
fi
if ! pid=$(cat "$work/nginx.pid" 2>/dev/null); then
    echo "acmelb lab deploy hook: nginx is not running" >&2
    exit 1
fi
before=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null)
kill -HUP "$pid" || exit 1
i=0
while [ "$(cat "/proc/$pid/task/$pid/children" 2>/dev/null)" = "$before" ]; do
    i=$((i + 1))
    if [ "$i" -gt 500 ]; then
        echo "acmelb lab deploy hook: nginx did not reload within 5 s" >&2
        exit 1
    fi
    sleep 0.01
done
# ...and the old workers have stopped accepting (gone, or "is shutting down").
for old in $before; do
    while [ -e "/proc/$old" ] && ! grep -q "shutting down" "/proc/$old/cmdline" 2>/dev/null
    do
        i=$((i + 1))
        if [ "$i" -gt 500 ]; then
            echo "acmelb lab deploy hook: nginx did not reload within 5 s" >&2
            exit 1
        fi
        sleep 0.01
    done
done
"""
