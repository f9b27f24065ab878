"""A stdlib-only HTTP-01 fetch that measures the way an ACME CA validates.

This one file runs in three ways, and measures the same way in each:

* imported by acmelb (``run_request(request) -> result``);
* as a script: ``python3 probe.py REQUEST.json`` or ``python3 probe.py -``;
* shipped to a remote vantage: its source on stdin to ``python3 -`` with the
  request as an argument, ``python3 - --request-b64 BASE64`` (base64 survives
  the shell that ``ssh`` puts in between).

It prints one JSON object (``PROBE_SCHEMA``).  It must not import anything
from acmelb and must run on any Python >= 3.6 a node may have, so it keeps
to plain syntax: no dataclasses, no ``match``, no walrus.

What it emulates (Let's Encrypt's validation authority, Boulder): a GET on
port 80 with ``Accept: */*`` and ``Accept-Encoding: gzip`` (Go's transport
asks for gzip and decodes it), the name resolved to AAAA and A, redirects
recorded hop by hop.  It follows redirects like Go's client (the more
lenient cert-manager self-check) and records each hop, so that the caller
can apply Boulder's stricter rules to the same chain.
"""

# ruff: noqa: UP006, UP031, UP035, UP041, UP045, SIM105, B905
# (plain syntax on purpose: this file must run on the oldest python3 a node has)
import base64
import functools
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
import zlib
from typing import Any, Dict, Generator, List, Optional, Tuple

Hop = Dict[str, Any]
# A step function: a generator that yields the I/O it needs, ``(operation, args...)``,
# and receives the result (or has the exception thrown in). The HTTP-01 fetch rules
# live in steps, once; a blocking driver (here) and an asyncio driver
# (acmelb.doctor.probe_async) perform the I/O, so the two cannot measure differently.
Steps = Generator[Tuple[Any, ...], Any, Any]

PROBE_SCHEMA = "acmelb.probe/v1"
DEFAULT_USER_AGENT = "acmelb-probe/1 (+HTTP-01 diagnosis; emulates an ACME validator)"
# Boulder (va/http.go) checks "numRedirects > maxRedirect (10)" before counting the
# redirect, so it follows 11 and refuses the 12th; the probe records up to the 12th so
# that both Boulder's and Go's (9 followed) limits can be judged on the same chain.
MAX_HOPS = 11
BODY_KEEP = 2048  # characters of body kept as evidence
# Go's Transport reads response heads up to MaxResponseHeaderBytes, 10 MiB when unset
# (net/http/transport.go, maxHeaderResponseSize), as Boulder's httpTransport leaves it
HEADER_LIMIT = 10 << 20
MAX_1XX = 5  # Go's max1xxResponses: more informational responses are an error
# Go's textproto: a line ends in LF, a CR before it is dropped; the head ends at an empty line
_HEAD_END = re.compile(b"\n\r?\n")
# a header name is a token (RFC 9110); Go refuses a head with any other (textproto)
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)  # what Go's client follows

# Outcomes of one fetch (one hop).  "response" is the only one with a status.
OUTCOMES = (
    "response",
    "dns-error",
    "connect-timeout",
    "connect-refused",
    "connect-error",
    "reset",
    "empty-reply",
    "read-timeout",
    "total-timeout",
    "tls-on-http-port",
    "bad-response",
    "redirect-error",
)
DIAL_ERRORS = ("connect-timeout", "connect-refused", "connect-error")


class _Deadline(Exception):
    pass


def _now() -> float:
    return time.monotonic()


def _family_name(family: int) -> str:
    return "ipv6" if family == socket.AF_INET6 else "ipv4"


def _is_ip(text: str) -> bool:
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, text)
            return True
        except (OSError, ValueError):
            pass
    return False


def _family_of(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def resolve(name: str, overrides: Optional[Dict[str, List[str]]] = None) -> Dict[str, Any]:
    """Resolve ``name`` on this host: ``{"aaaa": [...], "a": [...], "error": str|None}``.

    ``overrides`` maps lower-case names to address lists (like curl --resolve).
    """
    result = run_blocking(resolve_steps(name, overrides))  # type: Dict[str, Any]
    return result


def resolve_steps(name: str, overrides: Optional[Dict[str, List[str]]]) -> Steps:
    """``resolve`` as steps: overrides and literals here, the system's resolver through
    the driver (``("getaddrinfo", name)``)."""
    key = name.lower().rstrip(".")
    if overrides and key in overrides:
        addrs = list(overrides[key])
        return {
            "name": key,
            "source": "override",
            "aaaa": [a for a in addrs if ":" in a],
            "a": [a for a in addrs if ":" not in a],
            "error": None,
        }
    if _is_ip(key.strip("[]")):
        addr = key.strip("[]")
        return {
            "name": key,
            "source": "literal",
            "aaaa": [addr] if ":" in addr else [],
            "a": [] if ":" in addr else [addr],
            "error": None,
        }
    aaaa = []  # type: List[str]
    a = []  # type: List[str]
    try:
        infos = yield ("getaddrinfo", key)
    except socket.gaierror as exc:
        return {"name": key, "source": "system", "aaaa": [], "a": [], "error": str(exc)}
    except (OSError, UnicodeError) as exc:
        return {"name": key, "source": "system", "aaaa": [], "a": [], "error": str(exc)}
    for family, _t, _p, _c, sockaddr in infos:
        addr = str(sockaddr[0])
        if family == socket.AF_INET6 and addr not in aaaa:
            aaaa.append(addr)
        elif family == socket.AF_INET and addr not in a:
            a.append(addr)
    return {"name": key, "source": "system", "aaaa": aaaa, "a": a, "error": None}


@functools.lru_cache(maxsize=512)  # a name's probes split the same URLs several times each
def _split_url(url: str) -> Tuple[str, str, int, str]:
    """Return (scheme, host, port, path) or raise ValueError."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)", url)
    if not m:
        raise ValueError("not an absolute URL: %r" % url)
    scheme = m.group(1).lower()
    authority = m.group(2)
    path = m.group(3) or "/"
    if "@" in authority:
        authority = authority.rsplit("@", 1)[1]
    port = None
    if authority.startswith("["):
        end = authority.find("]")
        host = authority[1:end]
        rest = authority[end + 1 :]
        if rest.startswith(":") and rest[1:]:
            port = int(rest[1:])
    elif authority.count(":") == 1:
        host, p = authority.split(":")
        if p:
            if not p.isdigit():
                raise ValueError("bad port in %r" % url)
            port = int(p)
    else:
        host = authority
    if port is None:
        port = 443 if scheme == "https" else 80
    if not path.startswith("/"):
        path = "/" + path
    return scheme, host.lower().rstrip("."), port, path


def join_url(base: str, location: str) -> str:
    """Resolve a Location header against the URL that produced it (also how
    ``acmelb.doctor.vantage``'s curl fallback names the hops curl followed)."""
    location = location.strip()
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", location):
        return location
    scheme, host, port, path = _split_url(base)
    default = 443 if scheme == "https" else 80
    hostport = ("[%s]" % host if ":" in host else host) + ("" if port == default else ":%d" % port)
    if location.startswith("//"):
        return scheme + ":" + location
    if location.startswith("/"):
        return "%s://%s%s" % (scheme, hostport, location)
    directory = path.split("?", 1)[0].rsplit("/", 1)[0]
    return "%s://%s%s/%s" % (scheme, hostport, directory, location)


def _proxy_header(src: Tuple[Any, ...], dst: Tuple[Any, ...], family: int) -> bytes:
    proto = "TCP6" if family == socket.AF_INET6 else "TCP4"
    return ("PROXY %s %s %s %d %d\r\n" % (proto, src[0], dst[0], src[1], dst[1])).encode("ascii")


class _Reader:
    """Reads under a read timeout and a total deadline. Its methods are steps: they
    yield ``("recv", timeout)`` and a driver sends back the bytes (b"" at the end) or
    throws in the socket's exception."""

    def __init__(self, read_timeout: float, deadline: float) -> None:
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.buf = b""
        self.total = 0
        self.eof = False

    def _fill(self) -> Steps:
        # At the deadline, bytes so far make it a total-timeout (an incomplete answer);
        # none at all stays a read timeout (connected, no response).
        remaining = self.deadline - _now()
        if remaining <= 0:
            raise _Deadline() if self.total else socket.timeout()
        try:
            data = yield ("recv", min(self.read_timeout, remaining))
        except socket.timeout:
            if self.deadline - _now() <= 0.001 and self.total:
                raise _Deadline() from None
            raise
        if not data:
            self.eof = True
            return False
        self.total += len(data)
        self.buf += data
        return True

    def read_head(self, limit: int) -> Steps:
        """Up to and including the empty line that ends a response head (LF or CRLF)."""
        while True:
            found = _HEAD_END.search(self.buf)
            if found is not None:
                out, self.buf = self.buf[: found.end()], self.buf[found.end() :]
                return out
            if len(self.buf) > limit:
                raise ValueError("response head longer than %d bytes" % limit)
            filled = yield from self._fill()
            if not filled:
                return None

    def read_until(self, marker: bytes, limit: int) -> Steps:
        while marker not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("header section longer than %d bytes" % limit)
            filled = yield from self._fill()
            if not filled:
                return None
        idx = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:idx], self.buf[idx:]
        return out

    def read_exact(self, n: int) -> Steps:
        while len(self.buf) < n:
            filled = yield from self._fill()
            if not filled:
                break
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_to_eof(self, cap: int) -> Steps:
        while len(self.buf) <= cap:
            filled = yield from self._fill()
            if not filled:
                break
        out, self.buf = self.buf[: cap + 1], b""
        return out


def _read_chunked(reader: _Reader, cap: int) -> Steps:
    body = b""
    while True:
        line = yield from reader.read_until(b"\r\n", 4096)
        if line is None:
            raise ValueError("chunked body ended early")
        size_text = line.strip().split(b";", 1)[0]
        size = int(size_text, 16)
        if size == 0:
            # trailers up to the blank line; tolerate their absence
            while True:
                trailer = yield from reader.read_until(b"\r\n", 4096)
                if trailer is None or trailer == b"\r\n":
                    break
            return body, False
        chunk = yield from reader.read_exact(size)
        body += chunk
        if len(chunk) < size:
            raise ValueError("chunked body ended early")
        if len(body) > cap:
            return body[: cap + 1], True
        yield from reader.read_exact(2)


def _decode_body(body: bytes) -> str:
    # As Go's string(body) reads it: an invalid UTF-8 byte is U+FFFD, so a raw 0xA0 or
    # 0x85 after the key authorization is not white space that Boulder trims.
    return body.decode("utf-8", "replace")


def _looks_tls(data: bytes) -> bool:
    # A TLS record: content type alert (21) or handshake (22), major version 3.
    return len(data) >= 2 and data[0] in (0x15, 0x16) and data[1] == 0x03


def _tls_handshake_ok(address: str, port: int, host: str, timeout: float) -> bool:
    """After a failed plain-HTTP exchange: does this port speak TLS?"""
    family = _family_of(address)
    try:
        raw = socket.socket(family, socket.SOCK_STREAM)
    except OSError:
        return False
    raw.settimeout(timeout)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        raw.connect((address, port))
        tls = ctx.wrap_socket(raw, server_hostname=None if _is_ip(host) else host)
        tls.close()
        return True
    except (OSError, ssl.SSLError, ValueError):
        return False
    finally:
        try:
            raw.close()
        except OSError:
            pass


class _Outcome(Exception):
    """A fetch that ended without a response: the hop's outcome, its error text, and the
    bytes that came back (as evidence) if any. Every step raises only this; one handler
    in ``fetch_once`` turns it into the hop record."""

    def __init__(self, outcome: str, error: str, body: Optional[str] = None) -> None:
        Exception.__init__(self, error)
        self.outcome = outcome
        self.error = error
        self.body = body


def fetch_once(url: str, address: str, opts: Dict[str, Any], proxy_protocol: bool = False) -> Hop:
    """One GET of ``url`` sent to ``address`` (no redirect following).

    Returns a hop record: outcome, status, headers, body, timings.
    """
    result = run_blocking(fetch_steps(url, address, opts, proxy_protocol))  # type: Dict[str, Any]
    return result


def fetch_steps(url: str, address: str, opts: Dict[str, Any], proxy_protocol: bool) -> Steps:
    """``fetch_once`` as steps: connect, optional PROXY header, TLS, request, response."""
    connect_timeout = float(opts.get("connect_timeout", 5.0))
    read_timeout = float(opts.get("read_timeout", connect_timeout))
    total_timeout = float(opts.get("total_timeout", connect_timeout * 2))
    scheme, host, port, path = _split_url(url)
    family = _family_of(address)
    rec = new_hop(
        url,
        address=address,
        port=port,
        family=_family_name(family),
        proxy_protocol=bool(proxy_protocol),
    )
    start = _now()
    deadline = start + total_timeout
    try:
        yield from _connect(family, address, port, min(connect_timeout, total_timeout))
        rec["connect_ms"] = int((_now() - start) * 1000)
        if proxy_protocol:
            src, dst = yield ("names",)
            yield ("send", _proxy_header(src, dst, family))
        if scheme == "https":
            timeout = max(0.001, min(connect_timeout, deadline - _now()))  # Boulder: 10 s
            rec["tls_version"] = yield from _start_tls(host, timeout)
        yield from _send_request(
            path,
            _host_header(scheme, host, port),
            opts.get("user_agent") or DEFAULT_USER_AGENT,
        )
        reader = _Reader(read_timeout, deadline)
        head = yield from _final_head(reader, read_timeout)
        yield from _read_response(rec, reader, head, int(opts.get("body_cap", 1024 * 1024)))
    except _Outcome as out:
        rec["outcome"], rec["error"] = out.outcome, out.error
        if out.body is not None:
            rec["body"] = out.body
    except _Deadline:
        rec["outcome"] = "total-timeout"
        rec["error"] = "no complete response within %.1f s" % total_timeout
    except ConnectionResetError as exc:
        rec["outcome"], rec["error"] = "reset", "connection reset: %s" % exc
    except OSError as exc:
        rec["outcome"], rec["error"] = "connect-error", str(exc)
    finally:
        rec["elapsed_ms"] = int((_now() - start) * 1000)
    yield ("close",)
    return rec


def _connect(family: int, address: str, port: int, timeout: float) -> Steps:
    """A TCP connection to ``address``, or the dial error as an outcome."""
    try:
        yield ("connect", family, address, port, timeout)
    except socket.timeout as exc:
        raise _Outcome("connect-timeout", "connect timed out after %.1f s" % timeout) from exc
    except ConnectionRefusedError as exc:
        raise _Outcome("connect-refused", "connection refused") from exc
    except OSError as exc:
        raise _Outcome("connect-error", exc.strerror or str(exc)) from exc


def _start_tls(host: str, timeout: float) -> Steps:
    """TLS for an https hop (the CA ignores certificate errors here): its version."""
    try:
        version = yield ("tls", None if _is_ip(host) else host, timeout)
    except socket.timeout as exc:
        raise _Outcome("read-timeout", "TLS handshake timed out") from exc
    except (ssl.SSLError, OSError) as exc:
        raise _Outcome("bad-response", "TLS handshake failed: %s" % exc) from exc
    return version


def _host_header(scheme: str, host: str, port: int) -> str:
    default = 443 if scheme == "https" else 80
    return ("[%s]" % host if ":" in host else host) + ("" if port == default else ":%d" % port)


def _send_request(path: str, host_header: str, user_agent: str) -> Steps:
    request = (
        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: */*\r\n"
        "Accept-Encoding: gzip\r\nConnection: close\r\n\r\n" % (path, host_header, user_agent)
    ).encode("latin-1")
    try:
        yield ("send", request)
    except (ConnectionResetError, BrokenPipeError) as exc:
        raise _Outcome("reset", "connection reset while sending: %s" % exc) from exc


def _read_head(reader: _Reader, read_timeout: float) -> Steps:
    """The response head up to its blank line, or why none came."""
    try:
        head = yield from reader.read_head(HEADER_LIMIT)
    except ConnectionResetError as exc:
        if reader.total:
            raise _Outcome(
                "reset", "connection reset after %d bytes of non-HTTP data" % reader.total
            ) from exc
        raise _Outcome("reset", "connection reset by peer before any response") from exc
    except socket.timeout as exc:
        if reader.total:
            raise _Outcome(
                "read-timeout", "incomplete response header, then no data for %.1f s" % read_timeout
            ) from exc
        raise _Outcome("read-timeout", "connected, no response for %.1f s" % read_timeout) from exc
    except ValueError as exc:
        raise _Outcome("bad-response", str(exc)) from exc
    if head is None:
        raise _closed_early(reader.buf)
    if _looks_tls(head):
        raise _Outcome(
            "tls-on-http-port", "a TLS record came back: plain HTTP was sent to a TLS port"
        )
    return head


def _final_head(reader: _Reader, read_timeout: float) -> Steps:
    """The head of the final response: Go's transport reads past informational (1xx)
    responses other than 101, at most ``MAX_1XX`` of them (net/http/transport.go)."""
    informational = 0
    while True:
        head = yield from _read_head(reader, read_timeout)
        status = parse_head(head.decode("latin-1"))[0]
        if status is None or not 100 <= status <= 199 or status == 101:
            return head
        informational += 1
        if informational > MAX_1XX:
            raise _Outcome("bad-response", "net/http: too many 1xx informational responses")


def _closed_early(data: bytes) -> _Outcome:
    """The connection closed before a complete head: what the bytes so far say."""
    body = _decode_body(data[:BODY_KEEP]) if data else None
    if not data:
        return _Outcome("empty-reply", "connection accepted, then closed without any response")
    if _looks_tls(data):
        return _Outcome(
            "tls-on-http-port", "a TLS record came back: plain HTTP was sent to a TLS port", body
        )
    if data.startswith(b"HTTP/"):
        return _Outcome("bad-response", "truncated response header", body)
    return _Outcome("bad-response", "not an HTTP response: %r" % data[:60], body)


_STATUS_LINE = re.compile(r"^HTTP/\d(?:\.\d)?\s+(\d{3})(?:\s+(.*))?$")


def _head_lines(text: str) -> List[str]:
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def parse_head(text: str) -> Tuple[Optional[int], str, List[List[str]]]:
    """A response head (status line, then header lines; LF or CRLF between) as status,
    reason and headers; status is None when the first line is not an HTTP status line.
    Also used for the heads that curl prints (``acmelb.doctor.vantage``)."""
    lines = _head_lines(text)
    headers = [
        [k.strip(), v.strip()] for k, sep, v in (ln.partition(":") for ln in lines[1:]) if sep
    ]
    m = _STATUS_LINE.match(lines[0])
    if not m:
        return None, "", headers
    return int(m.group(1)), (m.group(2) or "").strip(), headers


def go_head_problem(text: str) -> Optional[str]:
    """Why Go's ``http.ReadResponse`` refuses this head (net/http/response.go and
    textproto), or None: the status line's version and code, and header lines."""
    lines = [line for line in _head_lines(text) if line]
    proto, sep, rest = lines[0].partition(" ") if lines else ("", "", "")
    if not sep:
        return "malformed HTTP response %r" % lines[0][:80] if lines else "empty response"
    if not re.match(r"^HTTP/\d\.\d$", proto):
        return "malformed HTTP version %r" % proto[:40]
    code = rest.lstrip(" ").partition(" ")[0]
    if len(code) != 3 or not code.isdigit():
        return "malformed HTTP status code %r" % code[:40]
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            continue  # a folded continuation of the previous line
        key, colon, _ = line.partition(":")
        if not colon or (key and not _TOKEN.match(key)):
            return "malformed MIME header line: %s" % line[:80]
    return None


def go_framing(text: str) -> Tuple[Optional[str], bool, Optional[str]]:
    """How Go frames the body (net/http/transfer.go, readTransfer): the problem that
    makes it refuse the response, whether it is chunked, its Content-Length ("" to read
    to the end). Transfer-Encoding counts only from HTTP/1.1 on, and only "chunked";
    several Content-Lengths must agree; a Content-Length is digits only."""
    lines = _head_lines(text)
    headers = parse_head(text)[2]
    lengths = [v.strip() for k, v in headers if k.lower() == "content-length"]
    encodings = [v.strip() for k, v in headers if k.lower() == "transfer-encoding"]
    if len(set(lengths)) > 1:
        return "http: message cannot contain multiple Content-Length headers", False, None
    status = parse_head(text)[0]
    if status is None or 100 <= status <= 199 or status in (204, 304):
        return None, False, None  # no body, whatever the headers say
    version = re.match(r"^HTTP/(\d)\.(\d) ", lines[0])
    chunked = False
    if (
        encodings
        and version is not None
        and (int(version.group(1)), int(version.group(2))) >= (1, 1)
    ):
        if len(encodings) > 1:
            return "too many transfer encodings: %r" % encodings, False, None
        if encodings[0].lower() != "chunked":
            return "unsupported transfer encoding: %r" % encodings[0][:40], False, None
        chunked = True
    length = lengths[0] if lengths and not chunked else None
    if length and not length.isdigit():
        return "bad Content-Length %r" % length[:40], False, None
    return None, chunked, length


def _read_response(rec: Hop, reader: _Reader, head: bytes, body_cap: int) -> Steps:
    """Status, headers and body (within ``body_cap``) into the hop record."""
    text = head.decode("latin-1")
    problem = go_head_problem(text)
    if problem is not None:
        raise _Outcome("bad-response", problem)
    status, reason, headers = parse_head(text)
    if status is None:
        raise _Outcome("bad-response", "not an HTTP status line: %r" % text.split("\n")[0][:80])
    rec["status"], rec["reason"], rec["headers"] = status, reason, headers[:100]
    problem, chunked, length = go_framing(text)
    if problem is not None:
        raise _Outcome("bad-response", problem)
    hmap = {}  # type: Dict[str, str]
    for k, v in headers:
        hmap.setdefault(k.lower(), v)
    hmap.pop("transfer-encoding", None)
    hmap.pop("content-length", None)
    if chunked:
        hmap["transfer-encoding"] = "chunked"
    if length:
        hmap["content-length"] = length
    body, truncated, error = yield from _read_body(reader, status, hmap, body_cap)
    if error is None and not truncated:
        error = _short_of_length(body, hmap)
    if hmap.get("content-encoding", "").strip().lower() == "gzip":
        rec["content_encoding"] = "gzip"
        body, truncated, error = _gunzip(body, truncated, error, body_cap)
    if error is not None:
        rec["error"] = error
        rec["body_incomplete"] = True
    rec["outcome"] = "response"
    rec["body"] = _decode_body(body[:BODY_KEEP])
    rec["body_length"] = body_cap if truncated else len(body)
    rec["body_truncated"] = truncated


def _read_body(reader: _Reader, status: int, hmap: Dict[str, str], cap: int) -> Steps:
    """The body as framed (none, chunked, Content-Length, to EOF), at most ``cap`` + 1
    bytes; whether it was cut; what went wrong reading it (the hop stays a response)."""
    truncated = False
    try:
        if status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in hmap.get("transfer-encoding", "").lower():
            body, truncated = yield from _read_chunked(reader, cap)
        elif "content-length" in hmap and hmap["content-length"].strip().isdigit():
            length = int(hmap["content-length"].strip())
            body = yield from reader.read_exact(min(length, cap + 1))
            truncated = length > cap
        else:
            body = yield from reader.read_to_eof(cap)
        if len(body) > cap:
            body, truncated = body[: cap + 1], True
    except ConnectionResetError:
        return reader.buf, False, "connection reset while reading the body"
    except socket.timeout:
        return reader.buf, False, "body incomplete: no data for %.1f s" % reader.read_timeout
    except ValueError as exc:
        return reader.buf, False, "body unreadable: %s" % exc
    return body, truncated, None


def _short_of_length(body: bytes, hmap: Dict[str, str]) -> Optional[str]:
    """A body shorter than its Content-Length (the server closed early): Go's reader
    reports "unexpected EOF"."""
    declared = hmap.get("content-length", "").strip()
    if declared.isdigit() and len(body) < int(declared):
        return "body ended after %d of %s bytes (unexpected EOF)" % (len(body), declared)
    return None


def _gunzip(
    body: bytes, truncated: bool, error: Optional[str], cap: int
) -> Tuple[bytes, bool, Optional[str]]:
    """Decode a gzip body as Go's transport does (it asked for gzip); limits apply to
    the decoded bytes, as Boulder's LimitedReader reads from the decoded stream."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, cap + 1)
    except zlib.error as exc:
        return body, False, "gzip body unreadable: %s" % exc
    if len(out) > cap:
        return out[: cap + 1], True, None
    if error is None and not truncated and not inflater.eof:
        error = "gzip body ended early (unexpected EOF)"
    return out, False, error


def _finish_tls_check(rec: Hop, opts: Dict[str, Any]) -> Steps:
    """Turn an empty/reset/garbled answer into tls-on-http-port when the port speaks TLS."""
    garbled = rec["outcome"] in ("empty-reply", "reset", "bad-response")
    if garbled and rec["url"].startswith("http:"):
        timeout = float(opts.get("connect_timeout", 5.0))
        _s, host, port, _p = _split_url(rec["url"])
        speaks_tls = yield ("tls_probe", rec["address"], port, host, timeout)
        if speaks_tls:
            rec["error"] = "%s; a TLS handshake on the same port succeeds" % rec["error"]
            rec["outcome"] = "tls-on-http-port"
    if rec["outcome"] == "response" and rec["status"] == 400:
        text = (rec["body"] or "").lower()
        markers = ("plain http request was sent to https port", "http request to an https server")
        if any(m in text for m in markers):
            rec["tls_listener"] = True
    return rec


def _location(rec: Hop) -> Optional[str]:
    for k, v in rec["headers"]:
        if k.lower() == "location":
            return str(v)
    return None


def fetch_chain(
    url: str, address: str, opts: Dict[str, Any], proxy_protocol: bool = False
) -> Dict[str, Any]:
    """Fetch ``url`` at ``address``, following redirects (see ``chain_steps``)."""
    result = run_blocking(chain_steps(url, address, opts, proxy_protocol))  # type: Dict[str, Any]
    return result


def chain_steps(url: str, address: str, opts: Dict[str, Any], proxy_protocol: bool) -> Steps:
    """Fetch ``url`` at ``address``, following redirects like Go (recorded hop by hop).

    The first hop goes to ``address``; later hops resolve their own host
    (overrides first) and dial the first AAAA address, the first A address
    only after a dial error.  Returns ``{"final": hop, "redirects": [hop, ...]}``:
    ``redirects`` holds every hop that answered with a redirect, in order.
    """
    overrides = opts.get("resolve_map") or {}
    redirects = []  # type: List[Dict[str, Any]]
    seen = [url]
    current_url = url
    candidates = [address]
    first_target = _split_url(url)[1:3]
    deadline = _now() + float(opts["deadline"]) if opts.get("deadline") else None
    while True:
        use_proxy = proxy_protocol and _split_url(current_url)[1:3] == first_target
        hop_opts = _within(opts, deadline)
        if hop_opts is None:
            return {"final": _past_deadline(current_url, opts, redirects), "redirects": redirects}
        hop = yield from fetch_steps(current_url, candidates[0], hop_opts, use_proxy)
        if hop["outcome"] in DIAL_ERRORS and len(candidates) > 1:
            failed = hop
            hop_opts = _within(opts, deadline)
            if hop_opts is None:
                return {"final": hop, "redirects": redirects}
            hop = yield from fetch_steps(current_url, candidates[1], hop_opts, use_proxy)
            # Go's dialer falls back per hop; Boulder does not on a redirect hop, so keep
            # what the first address did for its verdict.
            hop["fallback_from"] = {
                "address": failed["address"],
                "outcome": failed["outcome"],
                "error": failed["error"],
            }
        hop = yield from _finish_tls_check(hop, opts)
        location = _location(hop) if hop["outcome"] == "response" else None
        if hop["outcome"] != "response" or hop["status"] not in REDIRECT_STATUSES or not location:
            return {"final": hop, "redirects": redirects}
        target = join_url(current_url, location)
        hop["location"] = location
        hop["redirect_to"] = target
        redirects.append(hop)
        try:
            host = _redirect_host(target, seen, len(redirects))
        except _Outcome as out:
            return {"final": _redirect_error(target, out.error), "redirects": redirects}
        seen.append(target)
        res = yield from resolve_steps(host, overrides)
        candidates = res["aaaa"][:1] + res["a"][:1]
        if not candidates:
            final = _redirect_error(
                target, "cannot resolve %s: %s" % (host, res["error"] or "no address")
            )
            final["outcome"] = "dns-error"
            return {"final": final, "redirects": redirects}
        current_url = target


def _redirect_host(target: str, seen: List[str], hops: int) -> str:
    """Whether Go's client follows a redirect to ``target`` (after ``hops`` redirects):
    the host to dial, or the problem as a redirect-error outcome."""
    scheme = target.split(":", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise _Outcome(
            "redirect-error", "unsupported scheme %r in redirect target %s" % (scheme, target)
        )
    if target in seen:
        raise _Outcome("redirect-error", "redirect loop: %s was already visited" % target)
    if hops > MAX_HOPS:
        raise _Outcome("redirect-error", "stopped after %d redirects" % MAX_HOPS)
    try:
        return _split_url(target)[1]
    except ValueError as exc:
        raise _Outcome("redirect-error", str(exc)) from exc


def new_hop(url: str, **fields: Any) -> Hop:
    """A hop record with every field present; ``fields`` fill in what is known."""
    hop = {
        "url": url,
        "address": None,
        "port": None,
        "family": None,
        "proxy_protocol": False,
        "outcome": None,
        "error": None,
        "status": None,
        "reason": None,
        "headers": [],
        "body": None,
        "body_length": None,
        "body_truncated": False,
        "body_incomplete": False,
        "content_encoding": None,
        "tls_version": None,
        "fallback_from": None,
        "connect_ms": None,
        "elapsed_ms": None,
    }  # type: Hop
    hop.update(fields)
    return hop


def _within(opts: Dict[str, Any], deadline: Optional[float]) -> Optional[Dict[str, Any]]:
    """The options of the next hop, cut to what is left of the whole validation's
    deadline (Boulder: one context for every hop, va/http.go); None when none is left."""
    if deadline is None:
        return opts
    remaining = deadline - _now()
    if remaining <= 0.001:
        return None
    cut = dict(opts)
    connect = float(opts.get("connect_timeout", 5.0))
    read = float(opts.get("read_timeout", connect))
    cut["connect_timeout"] = min(connect, remaining)
    cut["read_timeout"] = min(read, remaining)
    cut["total_timeout"] = min(float(opts.get("total_timeout", connect * 2)), remaining)
    return cut


def _past_deadline(url: str, opts: Dict[str, Any], redirects: List[Hop]) -> Hop:
    return new_hop(
        url,
        outcome="total-timeout",
        error="the validation's deadline (%.1f s) passed after %d redirect(s)"
        % (float(opts["deadline"]), len(redirects)),
        elapsed_ms=0,
    )


def _redirect_error(url: str, problem: str) -> Hop:
    return new_hop(url, outcome="redirect-error", error=problem, elapsed_ms=0)


def _local_addresses() -> List[str]:
    """This host's (this network namespace's) own IPv4 addresses, loopback first."""
    found = ["127.0.0.1"]
    try:
        with open("/proc/net/fib_trie") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return found
    prev = None
    for line in lines:
        s = line.strip()
        if s.startswith("/32 host LOCAL") and prev:
            addr = prev.split()[-1]
            if not addr.startswith("127.") and addr not in found:
                found.append(addr)
        prev = s
    return found[:3]


def _usable_response(hop: Hop) -> bool:
    return hop["outcome"] == "response" and hop["status"] is not None and hop["status"] < 500


def _proxy_worth_trying(hop: Hop) -> bool:
    """Connected, but no usable HTTP answer: maybe the listener wants a PROXY header."""
    if hop["outcome"] in ("empty-reply", "reset", "read-timeout", "total-timeout", "bad-response"):
        return True
    return bool(hop["outcome"] == "response" and hop["status"] == 400)


_LAST_OVERRIDES = [None, None]  # type: List[Any]
_OVERRIDES_LOCK = threading.Lock()


def _overrides(raw: Dict[str, Any]) -> Dict[str, List[str]]:
    """``resolve`` with lower-case names and list values.

    A fleet run passes the same map of thousands of names to every probe in this
    process: it is normalised once (remembered by identity), not once per probe.
    """
    with _OVERRIDES_LOCK:
        if _LAST_OVERRIDES[0] is raw:
            return _LAST_OVERRIDES[1]  # type: ignore[no-any-return]
    out = {}  # type: Dict[str, List[str]]
    for k, v in raw.items():
        out[k.lower().rstrip(".")] = list(v) if isinstance(v, list) else [v]
    with _OVERRIDES_LOCK:
        _LAST_OVERRIDES[0], _LAST_OVERRIDES[1] = raw, out
    return out


def run_request(request: Dict[str, Any]) -> Dict[str, Any]:
    """Run a probe request (a dict, see the module doc) and return the result dict."""
    result = run_blocking(request_steps(request))  # type: Dict[str, Any]
    return result


def request_steps(request: Dict[str, Any]) -> Steps:
    """``run_request`` as steps; ``("chains", url, opts, jobs)`` asks the driver to run
    ``chain_steps`` for every job, concurrently, results in job order."""
    started = _now()
    name = request["name"]
    url = request["url"]
    repeat = max(1, int(request.get("repeat", 1)))
    overrides = _overrides(request.get("resolve") or {})
    opts = dict(request.get("options") or {})
    opts["resolve_map"] = overrides
    proxy_mode = request.get("proxy_protocol", "on-failure")
    if request.get("addresses") is not None:
        addrs = list(request["addresses"])
        resolution = {
            "name": name,
            "source": "given",
            "aaaa": [a for a in addrs if ":" in a],
            "a": [a for a in addrs if ":" not in a],
            "error": None,
        }
    else:
        resolution = yield from resolve_steps(name, overrides)
    ordered = resolution["aaaa"] + resolution["a"]
    ordered = ordered[: int(request.get("max_addresses", 8))]
    always = proxy_mode == "always"
    jobs = [(a, n, "public", always) for a in ordered for n in range(1, repeat + 1)]
    if request.get("local_probe"):
        local_addrs = request.get("local_addresses") or _local_addresses()
        jobs += [(a, 1, "local", False) for a in local_addrs[:3]]
    done = yield ("chains", url, opts, jobs)
    if proxy_mode == "on-failure" or (proxy_mode != "never" and request.get("local_probe")):
        retry = []
        for job, chain in zip(jobs, done):
            worth = _proxy_worth_trying(chain["final"]) and not job[3]
            if worth and job[2] == "public" and job[1] == 1 and proxy_mode == "on-failure":
                retry.append((job[0], 1, "public", True))
            elif worth and job[2] == "local":
                retry.append((job[0], 1, "local", True))
        retried = yield ("chains", url, opts, retry)
        for job, chain in zip(retry, retried):
            if job[2] == "public" or _usable_response(chain["final"]):
                jobs.append(job)
                done.append(chain)
    attempts = [_attempt(j[0], j[1], j[2], c, j[3]) for j, c in zip(jobs, done)]
    # public probes first (address order, attempt, PROXY last), then the local ones
    rank = {a: i for i, a in enumerate(ordered)}
    attempts.sort(
        key=lambda x: (
            x["target"] != "public",
            rank.get(x["address"], 99),
            x["proxy_protocol"],
            x["attempt"],
        )
    )
    return {
        "schema": PROBE_SCHEMA,
        "runner": "python",
        "python": "%d.%d.%d" % sys.version_info[:3],
        "host": socket.gethostname(),
        "name": name,
        "url": url,
        "resolution": resolution,
        "attempts": attempts,
        "elapsed_ms": int((_now() - started) * 1000),
    }


# Probe fetches of this process run on one shared pool of threads: no thread is started
# per probe, and however many diagnoses run at once (a fleet), at most MAX_OPEN probe
# sockets are open (each fetch holds one socket at a time).  One request still runs at
# most PER_REQUEST fetches at once.
MAX_OPEN = 64
PER_REQUEST = 8
_POOL = []  # type: List[Any]
_POOL_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):  # Python >= 3.7
    # a forked child (a fleet's worker process) has none of the parent's pool threads
    os.register_at_fork(after_in_child=_POOL.clear)


def _pool() -> Any:
    with _POOL_LOCK:
        if not _POOL:
            from concurrent.futures import ThreadPoolExecutor

            _POOL.append(ThreadPoolExecutor(MAX_OPEN, thread_name_prefix="acmelb-probe"))
        return _POOL[0]


def failed_chain(url: str, exc: Exception) -> Dict[str, Any]:
    """The chain record of a probe that failed by a bug, not by the network."""
    hop = _redirect_error(url, "probe failure: %s: %s" % (type(exc).__name__, exc))
    hop["outcome"] = "connect-error"
    return {"final": hop, "redirects": []}


def _parallel(
    url: str, opts: Dict[str, Any], jobs: List[Tuple[str, int, str, bool]]
) -> List[Dict[str, Any]]:
    """Run fetch_chain for every job, up to PER_REQUEST at once; results in job order."""
    results = [None] * len(jobs)  # type: List[Any]
    lock = threading.Lock()
    queue = list(enumerate(jobs))

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                index, job = queue.pop(0)
            try:
                results[index] = fetch_chain(url, job[0], opts, proxy_protocol=job[3])
            except Exception as exc:  # a probe bug must not lose the other results
                results[index] = failed_chain(url, exc)

    # this thread works too (one hand-off fewer); with one job, no other thread at all
    futures = [_pool().submit(worker) for _ in range(min(PER_REQUEST, len(jobs)) - 1)]
    worker()
    for future in futures:
        future.result()
    return results


class _BlockingIO:
    """Performs the steps' I/O with blocking sockets: one connection at a time (a hop
    is one exchange), closed at ``close`` or when the steps end."""

    def __init__(self) -> None:
        self.sock = None  # type: Optional[socket.socket]

    def perform(self, op: Tuple[Any, ...]) -> Any:
        kind = op[0]
        if kind == "recv":
            assert self.sock is not None
            self.sock.settimeout(op[1])
            return self.sock.recv(65536)
        if kind == "send":
            assert self.sock is not None
            self.sock.sendall(op[1])
            return None
        if kind == "connect":
            return self._connect(op[1], op[2], op[3], op[4])
        if kind == "names":
            assert self.sock is not None
            return self.sock.getsockname(), self.sock.getpeername()
        if kind == "tls":
            return self._tls(op[1], op[2])
        if kind == "close":
            return self.close()
        if kind == "getaddrinfo":
            return socket.getaddrinfo(op[1], 80, 0, socket.SOCK_STREAM)
        if kind == "tls_probe":
            return _tls_handshake_ok(op[1], op[2], op[3], op[4])
        if kind == "chains":
            return _parallel(op[1], op[2], op[3])
        raise ValueError("unknown probe operation %r" % (kind,))

    def _connect(self, family: int, address: str, port: int, timeout: float) -> None:
        self.close()
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except BaseException:
            sock.close()
            raise
        self.sock = sock

    def _tls(self, server_hostname: Optional[str], timeout: float) -> Optional[str]:
        assert self.sock is not None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock.settimeout(timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        return self.sock.version()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def run_blocking(steps: Steps) -> Any:
    """Drive steps to their result with blocking I/O."""
    io = _BlockingIO()
    value = None  # type: Any
    error = None  # type: Optional[BaseException]
    try:
        while True:
            try:
                op = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration as stop:
                return stop.value
            value, error = None, None
            try:
                value = io.perform(op)
            except Exception as exc:  # the steps decide what an I/O error means
                error = exc
    finally:
        io.close()


def _attempt(
    address: str, n: int, target: str, chain: Dict[str, Any], proxy: bool
) -> Dict[str, Any]:
    return {
        "address": address,
        "attempt": n,
        "target": target,
        "proxy_protocol": proxy,
        "final": chain["final"],
        "redirects": chain["redirects"],
    }


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["--request-b64"] and len(argv) == 2:
            request = json.loads(base64.b64decode(argv[1]).decode("utf-8"))
        elif len(argv) == 1 and argv[0] == "-":
            request = json.load(sys.stdin)
        elif len(argv) == 1 and os.path.isfile(argv[0]):
            with open(argv[0]) as fh:
                request = json.load(fh)
        elif len(argv) == 1:
            request = json.loads(argv[0])
        else:
            sys.stderr.write("usage: probe.py REQUEST.json | - | JSON | --request-b64 B64\n")
            return 2
        result = run_request(request)
    except (ValueError, KeyError, TypeError) as exc:
        sys.stdout.write(json.dumps({"schema": PROBE_SCHEMA, "error": "bad request: %s" % exc}))
        sys.stdout.write("\n")
        return 2
    sys.stdout.write(json.dumps(result))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
