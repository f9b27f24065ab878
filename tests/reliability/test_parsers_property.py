"""Property tests of the parsers that read untrusted input: never a crash, always a clean error.

* the probe's HTTP response handling, against a real socket that answers
  whatever hypothesis makes up (status lines, headers, chunking, redirects,
  bytes), and the diagnosis built from what it recorded;
* cert-manager Challenge import from arbitrary text and mutated Challenges
  (tests/diagnose/test_robustness.py covers arbitrary JSON values);
* names, and the command-line flags of commands that touch no network.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import json
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acmelb.cli.main import main
from acmelb.doctor import probe
from acmelb.doctor.checks.base import Target, VantageRun
from acmelb.doctor.diagnose import analyse
from acmelb.errors import InvalidNameError, UsageError
from acmelb.kube.challenges import parse_challenges
from acmelb.names import normalize_name
from tests.diagnose.servers import Server

DIAG = json.loads(
    importlib.resources.files("acmelb").joinpath("schemas/diagnosis-v1.json").read_text()
)
TOKEN = "tok_" + "T" * 39
KEY = f"{TOKEN}.{'A' * 43}"


class CannedServer(Server):
    """Answers every connection on 127.0.0.1 with ``self.answer`` and closes."""

    def __init__(self) -> None:
        self.answer = b""
        super().__init__(
            lambda conn, _request: conn.sendall(self.answer), address="127.0.0.1", port=0
        )


@pytest.fixture(scope="module")
def canned() -> Iterator[CannedServer]:
    server = CannedServer()
    yield server
    server.close()


_tokens = st.sampled_from(
    ["200", "301", "302", "303", "307", "308", "404", "500", "100", "999", "2000", "-1", "abc", ""]
)
_reasons = st.sampled_from(["OK", "Moved", "", "Not Found", "\u00e9", "x" * 300])
_versions = st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", "HTTP/0.9", "http/1.1", "ICY", ""])


def _location(port: int) -> st.SearchStrategy[str]:
    hosts = st.sampled_from(
        [
            "a.test",
            "127.0.0.1",
            f"127.0.0.1:{port}",
            f"a.test:{port}",
            "[::1]",
            "a.test:0",
            "a.test:99999",
            "a.well-known",
            "a.test:x",
        ]
    )
    schemes = st.sampled_from(["http://", "https://", "ftp://", "//", "HTTP://", "http:/"])
    paths = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
    absolute = st.builds(lambda s, h, p: f"{s}{h}/{p}", schemes, hosts, paths)
    # relative targets never start with "//" (a host of hypothesis's choosing: real DNS)
    relative = paths.map(lambda p: "/p" + p) | paths.map(lambda p: "p" + p)
    return absolute | relative | st.just("")


def _responses(port: int) -> st.SearchStrategy[bytes]:
    header_names = st.sampled_from(
        [
            "Content-Length",
            "Transfer-Encoding",
            "Content-Type",
            "Connection",
            "Server",
            "X-Junk",
            "content-length",
            "Set-Cookie",
        ]
    )
    header_values = st.sampled_from(
        [
            "0",
            "5",
            "-3",
            "99999999999",
            "abc",
            "chunked",
            "gzip, chunked",
            "close",
            "text/plain",
            "",
        ]
    ) | st.text(max_size=30)
    location = st.tuples(st.sampled_from(["Location", "location", "LOCATION"]), _location(port))
    headers = st.lists(st.tuples(header_names, header_values) | location, max_size=6)
    chunk = st.builds(
        lambda size, data, end: f"{size}\r\n".encode() + data + end,
        st.sampled_from(["0", "5", "a", "FFFFFFFF", "zz", "3;ext=1", ""]),
        st.binary(max_size=20),
        st.sampled_from([b"\r\n", b"", b"\n"]),
    )
    body = (
        st.binary(max_size=300)
        | st.builds(b"".join, st.lists(chunk, max_size=4))
        | st.sampled_from([KEY.encode(), KEY.encode() + b"\n", b"x" * 5000])
    )

    def build(
        version: str, status: str, reason: str, hdrs: list[tuple[str, str]], data: bytes, sep: bytes
    ) -> bytes:
        head = f"{version} {status} {reason}".encode("utf-8", "surrogatepass") + sep
        for name, value in hdrs:
            head += f"{name}: {value}".encode("utf-8", "surrogatepass") + sep
        return head + sep + data

    structured = st.builds(
        build, _versions, _tokens, _reasons, headers, body, st.sampled_from([b"\r\n", b"\n", b"\r"])
    )
    return structured | st.binary(max_size=200) | st.just(b"")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
@pytest.mark.timeout(300)
def test_probe_never_crashes_on_any_answer(canned: CannedServer, data: st.DataObject) -> None:
    canned.answer = data.draw(_responses(canned.port))
    result = probe.run_request(
        {
            "name": "a.test",
            "url": f"http://a.test:{canned.port}/.well-known/acme-challenge/{TOKEN}",
            "addresses": ["127.0.0.1"],
            # every name a redirect may lead to stays on the loopback
            "resolve": {"a.test": ["127.0.0.1"], "a.well-known": ["127.0.0.1"]},
            "proxy_protocol": "never",
            "options": {"connect_timeout": 0.5, "read_timeout": 0.2, "total_timeout": 1.0},
        }
    )
    json.dumps(result)  # JSON-safe all the way down
    assert result["schema"] == probe.PROBE_SCHEMA
    assert result["attempts"]
    for attempt in result["attempts"]:
        for hop in [*attempt["redirects"], attempt["final"]]:
            assert hop["outcome"] in probe.OUTCOMES, hop
            assert hop["outcome"] != "dns-error", hop  # the test itself stayed on the loopback
            assert hop["status"] is None or isinstance(hop["status"], int)
    # and the diagnosis built on it holds together
    report = analyse(
        Target("a.test", TOKEN, KEY), [VantageRun("outside:here", "outside", False, result)]
    )
    jsonschema.validate(report.to_json(), DIAG)


def _challenge(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "acme.cert-manager.io/v1",
        "kind": "Challenge",
        "metadata": {"name": "c", "namespace": "n"},
        "spec": {"dnsName": "a.example.com", "type": "HTTP-01", "token": TOKEN, "key": KEY, **spec},
        "status": {"state": "pending", "reason": "Waiting for HTTP-01 propagation"},
    }


_odd = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
)


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["dnsName", "type", "token", "key", "solver", "url"]),
    value=_odd,
    where=st.sampled_from(["spec", "metadata", "status", "kind", "items", "root"]),
)
def test_mutated_challenges_parse_or_fail_cleanly(field: str, value: object, where: str) -> None:
    item = _challenge()
    if where == "spec":
        item["spec"][field] = value  # type: ignore[index]
    elif where == "root":
        item = value  # type: ignore[assignment]
    else:
        item[where] = value
    for doc in (item, {"apiVersion": "v1", "kind": "List", "items": [item]}):
        try:
            parsed = parse_challenges(json.dumps(doc))
        except UsageError as exc:
            assert "\n" not in str(exc)
            continue
        for challenge in parsed:
            assert isinstance(challenge.dns_name, str) and isinstance(challenge.type, str)


def test_challenge_kind_is_not_echoed_raw() -> None:
    item = {**_challenge(), "kind": "X\n\x1b[2Jacmelb: all good"}
    with pytest.raises(UsageError) as caught:
        parse_challenges(json.dumps({"kind": "List", "items": [item]}))
    assert "\n" not in str(caught.value) and "\x1b" not in str(caught.value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")))
def test_challenge_import_of_any_text(text: str) -> None:
    try:
        assert isinstance(parse_challenges(text), list)
    except UsageError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=500, deadline=None)
@given(
    st.text(max_size=300)
    | st.from_regex(r"[a-zA-Z0-9.*_-]{0,80}", fullmatch=True)
    | st.lists(
        st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=1, max_size=70),
        min_size=1,
        max_size=6,
    ).map(".".join)
)
def test_names_normalize_to_a_valid_name_or_refuse_in_one_line(raw: str) -> None:
    try:
        name = normalize_name(raw)
    except InvalidNameError as exc:
        assert "\n" not in str(exc).strip()
        return
    assert name == normalize_name(name)  # idempotent
    assert name.isascii() and name == name.lower()
    assert 0 < len(name) <= 253 and "*" not in name
    assert all(
        0 < len(label) <= 63 and not label.startswith("-") and not label.endswith("-")
        for label in name.split(".")
    )


def _run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    out = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
    return code, err.getvalue()


_values = st.sampled_from(
    [
        "",
        "-1",
        "0",
        "65536",
        "1e9",
        "nan",
        "inf",
        "x",
        "a.test",
        "*.a.test",
        "1.2.3.4",
        "::1",
        "198.18.0.0/15",
        "10.0.0.0/33",
        "--",
        "-",
        "app.test:80:127.0.0.1",
        "a" * 300,
        "\u00e9.test",
        "\x00",
    ]
) | st.text(max_size=20)


@pytest.fixture(scope="module")
def unusable_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    blocker = tmp_path_factory.mktemp("flags") / "file"
    blocker.write_text("")
    return blocker / "state"  # a state dir under a file: any command stops before network


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    command=st.sampled_from(
        ["issue", "renew", "fix-loop", "fix-lb", "fix-k8s", "certificates", "revoke", "explain"]
    ),
    flags=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "--http-port",
                    "--concurrency",
                    "--key-type",
                    "--solver",
                    "--self-check",
                    "--timeout",
                    "--resolve",
                    "--assume-public",
                    "--here",
                    "--days",
                    "--vip",
                    "--backend",
                    "--subnet",
                    "--port",
                    "--case",
                    "--provider",
                    "--name",
                    "--reason",
                    "--self-check-timeout",
                    "--webroot",
                    "--http-address",
                    "--from-file",
                ]
            ),
            _values,
        ),
        max_size=5,
    ),
    positional=st.lists(_values, max_size=3),
)
def test_flags_never_crash(
    unusable_state: Path, command: str, flags: list[tuple[str, str]], positional: list[str]
) -> None:
    prefix = {
        "fix-loop": ["fix", "nat-loopback"],
        "fix-lb": ["fix", "lb-tcp", "--nginx"],
        "fix-k8s": ["fix", "k8s"],
    }.get(command, [command])
    argv = [*prefix]
    for flag, value in flags:
        argv += [flag, value]
    if command in ("issue", "renew", "certificates", "revoke"):
        # never a real CA: a closed loopback port, and a state dir that cannot be used
        argv += ["--state-dir", str(unusable_state)]
        if command in ("issue", "revoke"):
            argv += ["--directory", "https://127.0.0.1:1/dir"]
    argv += ["--", *positional] if positional else []
    code, err = _run_cli(argv)
    assert code in (0, 1, 2), (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code != 0 and err and "usage:" not in err:
        assert err.startswith("acmelb: error:") or err.startswith("acmelb:"), (argv, err)
