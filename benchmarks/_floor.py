"""The protocol floor: one certificate with the bare ``acme`` library, nothing else.

The same ACME requests as any client (order, answer the http-01 challenge, poll the
authorization, finalize, poll the order, download), polling every 20 ms, an
already registered account, a minimal threaded responder. No retries, no storage,
no self-check. Run as a whole process by bench_issue.py; prints one JSON line with
the in-process times.

    python benchmarks/_floor.py --directory URL --bundle PEM --key JWK.json \
        --regr regr.json --port PORT NAME
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

from acme import challenges, client, crypto_util, messages  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from josepy import jwk  # noqa: E402

POLL = 0.02
TOKENS: dict[str, bytes] = {}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = TOKENS.get(self.path.rsplit("/", 1)[-1])
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 128  # Pebble's VA opens several connections at once
    daemon_threads = True


def main() -> None:
    p = argparse.ArgumentParser()
    for opt in ("--directory", "--bundle", "--key", "--regr"):
        p.add_argument(opt, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("name")
    a = p.parse_args()
    imported = time.perf_counter()
    server = Server(("127.0.0.1", a.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    with open(a.key) as fh:
        key = jwk.JWK.json_loads(fh.read())
    with open(a.regr) as fh:
        regr = messages.RegistrationResource.json_loads(fh.read())
    net = client.ClientNetwork(
        key, account=regr, alg=__import__("josepy").ES256, verify_ssl=a.bundle
    )
    acme = client.ClientV2(client.ClientV2.get_directory(a.directory, net), net)
    protocol_start = time.perf_counter()
    cert_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    order = acme.new_order(crypto_util.make_csr(cert_key, [a.name]))
    for authz in order.authorizations:
        challb = next(c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01))
        response, validation = challb.chall.response_and_validation(key)
        TOKENS[challb.chall.encode("token")] = validation.encode()
        acme.answer_challenge(challb, response)
    for authz in order.authorizations:
        while True:
            current = acme.poll(authz)[0]
            if current.body.status not in (messages.STATUS_PENDING, messages.STATUS_PROCESSING):
                break
            time.sleep(POLL)
        assert current.body.status == messages.STATUS_VALID, current.body
    acme.begin_finalization(order)
    while True:
        body = messages.Order.from_json(acme._post_as_get(order.uri).json())
        if body.status in (messages.STATUS_VALID, messages.STATUS_INVALID):
            break
        time.sleep(POLL)
    assert body.status == messages.STATUS_VALID and body.certificate
    pem = acme._post_as_get(body.certificate).content
    assert b"BEGIN CERTIFICATE" in pem
    done = time.perf_counter()
    server.server_close()  # no shutdown(): it waits for serve_forever's 0.5 s poll
    print(
        json.dumps(
            {
                "import_s": imported - STARTED,
                "protocol_s": done - protocol_start,
                "in_process_s": done - STARTED,
            }
        )
    )


if __name__ == "__main__":
    main()
