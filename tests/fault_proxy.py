#!/usr/bin/env python3
"""fault_proxy.py: a fault-injecting HTTP/1.1 proxy to put between coldtier and S3 (moto).

What it is for
--------------
The Rust integration tests point coldtier's S3 endpoint at this proxy instead of at moto,
and tell the proxy, per test, which requests to break: corrupt a PUT body, corrupt a GET
body, answer 503 SlowDown, hang forever, delay, or stall a response half way. Everything
else is forwarded to the upstream (moto) byte for byte: method, path and query, every header
(Host included, so SigV4 signatures stay valid) and the body; the response comes back byte
for byte too (but for a hop-by-hop "Connection: close": see HTTP details below). Only the Python 3.11 standard library is used (asyncio), so the tests need
nothing but `python3`.

How the tests use it
--------------------
    python3 tests/fault_proxy.py --upstream http://127.0.0.1:MOTO_PORT \
        [--listen 127.0.0.1:0] [--port-file FILE]

It listens on 127.0.0.1 only (any other listen address is refused), on a free port when the
port is 0, and once listening writes that port and a newline to --port-file (atomically:
a temp file renamed into place), so a test polls for the file and then reads it. One line
per request goes to stderr (method, path, action, status). It exits on SIGTERM/SIGINT, and
by itself when its parent process dies (os.getppid() is checked every second), so a killed
test never leaves it behind: start it directly from the test process, not through a shell
that might outlive it.

The proxy answers requests under /__fault__/ itself (they are never forwarded):

    POST /__fault__/rules   body {"rules": [RULE, ...]}: replaces the rule list (and the
                            rules' counters); answers {"ok": true, "rules": N}, or 400 with
                            {"error": "..."} for a bad body or rule (unknown keys included)
    POST /__fault__/reset   clears the rules, the counters and the log
    GET  /__fault__/stats   {"requests": {"GET": n, "PUT": n, "HEAD": n, "POST": n,
                                          "DELETE": n, ...},
                             "applied":  {"corrupt_request_body": n, "status": n, "hang": n,
                                          "corrupt_response_body": n, "delay": n,
                                          "stall_response": n},
                             "log": [{"method", "path", "query", "range", "payload",
                                      "action", "status", "rule"}, ...],   (the last 10,000
                                      requests, oldest first; "range": the Range header or
                                      null; "payload": the x-amz-content-sha256 header or
                                      null)
                             "rules": [RULE plus "matched" and "applied" counts, ...]}
    GET  /__fault__/rules   {"rules": [...]} (as in stats)

"requests" and "log" count only S3 requests (forwarded or faulted), not /__fault__/ ones.
In the log, "action" is "forward" when no rule applied, "status" is the status sent to the
client (null when none was: hang, or a request still in flight), and "rule" is the index of
the rule that matched (also when its "skip" let the request through), else null.

Rule format
-----------
    {"method": "PUT" | "GET" | "HEAD" | "POST" | "DELETE" | "*",
     "path_contains": "substring",   optional; matched against the path without the query
                                     (as sent, or percent-decoded: either may contain it)
     "query_contains": "substring",  optional; e.g. "partNumber=" or "uploadId"
     "range_contains": "substring",  optional; matched against the Range header ("" when
                                     there is none), e.g. "bytes=0-"
     "action": ACTION,
     "times": N,                     optional; how many matching requests get the action
                                     (default: unlimited); a rule whose times are used up
                                     no longer matches, so later rules get their turn
     "skip": N,                      optional; the first N matching requests go through
                                     untouched (forwarded, no later rule consulted)
     ...action parameters}

The first rule that matches (and has times left) decides. ACTIONs and their parameters:

    "corrupt_request_body"   forward, with one byte of the request body flipped (XOR 0x01 at
                             offset len // 2; for a chunked body, in the first non-empty
                             chunk's data, at the middle of that chunk); an empty body is
                             forwarded unchanged. Content-Length is unchanged.
    "corrupt_response_body"  forward, and flip one byte of the response body the same way
                             (a body without length or chunking, read until the upstream
                             closes: the middle of the first piece read).
    "status"                 do not forward: read and discard the request body, wait
                             "delay" seconds (optional float, default 0), then answer
                             "status" (int, required) with an S3-style XML error:
                             <Error><Code>CODE</Code><Message>fault injected</Message></Error>
                             CODE is "code" (default "SlowDown" for 503, else "InternalError").
                             The connection stays usable (keep-alive).
    "hang"                   read the request, body included, and never answer; the
                             connection is closed when the client closes it or when the
                             rules are replaced or reset. Other connections are unaffected.
    "delay"                  wait "delay" seconds (float, required), then forward normally.
    "stall_response"         forward, send the response head and the first "after_bytes"
                             bytes (int, default 0) of the body, then send nothing more;
                             closed like "hang".

HTTP details
------------
* Keep-alive: many requests per client connection; each forwarded request gets its own,
  fresh upstream connection (so no two clients ever share one, and there is no stale
  pooled connection to go wrong), closed once the response is read. Since connection
  persistence is hop by hop, the one change ever made to a forwarded response is this: an
  upstream "Connection: close" (moto's werkzeug server sends it on every response) is
  removed when the client's connection can go on (HTTP/1.1, the client did not ask to close,
  the body is self-delimiting), so clients keep their connections as with real S3.
  Requests are never changed (only corrupt_request_body touches a body byte).
* Request bodies: Content-Length (streamed, never held whole in memory) or chunked (relayed
  chunk by chunk exactly as received: size lines with extensions, data, trailers).
* Expect: 100-continue: the proxy answers "100 Continue" to the client itself (when a body
  follows) and forwards the Expect header unchanged; the body is then sent upstream without
  waiting, and any 1xx interim response from upstream is dropped. A client never waits for
  its expect timeout, and faults that do not forward (status, hang) still read the body.
* Responses: Content-Length, chunked, or (rare) until the upstream closes; HEAD, 1xx, 204
  and 304 responses have no body whatever their Content-Length says.
* The proxy's own answers (status faults, /__fault__/) carry Content-Length; for a HEAD
  request the status fault sends the head only.
"""

import os

# The parent's pid, taken before anything slow: the proxy exits when it changes.
PARENT_PID = os.getppid()

import argparse  # noqa: E402 (after the pid above on purpose)
import asyncio
import collections
import http
import json
import signal
import sys
import time
import urllib.parse

CHUNK = 256 * 1024  # bytes moved per read/write when streaming a body
LINE_LIMIT = 1 << 20  # longest header line / chunk-size line accepted
HEAD_LIMIT = 1 << 20  # largest request or response head accepted
CONTROL_BODY_LIMIT = 16 << 20  # largest /__fault__/ request body accepted
LOG_KEEP = 10_000  # requests kept in the stats log

ACTIONS = (
    "corrupt_request_body",
    "status",
    "hang",
    "corrupt_response_body",
    "delay",
    "stall_response",
)
RULE_KEYS = {"method", "path_contains", "query_contains", "range_contains", "action", "times",
             "skip"}
ACTION_KEYS = {
    "corrupt_request_body": set(),
    "corrupt_response_body": set(),
    "status": {"status", "code", "delay"},
    "hang": set(),
    "delay": {"delay"},
    "stall_response": {"after_bytes"},
}


def log(msg: str) -> None:
    print(f"fault_proxy {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


class HttpError(Exception):
    """A malformed or unsupported HTTP message."""


class UpstreamError(Exception):
    """The upstream closed or failed before a whole response head came back."""


# --------------------------------------------------------------------------------------
# State: the rules, the counters, the log
# --------------------------------------------------------------------------------------


class Rule:
    def __init__(self, spec: dict):
        if not isinstance(spec, dict):
            raise ValueError(f"a rule must be a JSON object, not {spec!r}")
        action = spec.get("action")
        if action not in ACTIONS:
            raise ValueError(f"rule {spec!r}: action must be one of {', '.join(ACTIONS)}")
        unknown = set(spec) - RULE_KEYS - ACTION_KEYS[action]
        if unknown:
            raise ValueError(f"rule {spec!r}: unknown key(s) {sorted(unknown)} for {action}")
        self.spec = spec
        self.action = action
        self.method = _str(spec, "method", "*").upper()
        self.path_contains = _str(spec, "path_contains", None)
        self.query_contains = _str(spec, "query_contains", None)
        self.range_contains = _str(spec, "range_contains", None)
        self.times = _int(spec, "times", None)
        self.skip = _int(spec, "skip", 0)
        self.delay = _float(spec, "delay", 0.0)
        self.after_bytes = _int(spec, "after_bytes", 0)
        self.status = None
        self.code = None
        if action == "status":
            if "status" not in spec:
                raise ValueError(f"rule {spec!r}: a status action needs \"status\"")
            self.status = _int(spec, "status", None)
            if not 200 <= self.status <= 599:
                raise ValueError(f"rule {spec!r}: status must be in 200..599")
            default = "SlowDown" if self.status == 503 else "InternalError"
            self.code = _str(spec, "code", default)
        if action == "delay" and "delay" not in spec:
            raise ValueError(f"rule {spec!r}: a delay action needs \"delay\" (seconds)")
        self.matched = 0  # matching requests seen while the rule had times left
        self.applied = 0  # of those, how many got the action (the others were skipped)

    def matches(self, method: str, path: str, query: str, rng: str = "") -> bool:
        if self.times is not None and self.applied >= self.times:
            return False
        if self.method != "*" and self.method != method:
            return False
        if self.path_contains is not None and not (
            self.path_contains in path or self.path_contains in urllib.parse.unquote(path)
        ):
            return False
        if self.query_contains is not None and not (
            self.query_contains in query or self.query_contains in urllib.parse.unquote(query)
        ):
            return False
        if self.range_contains is not None and self.range_contains not in rng:
            return False
        return True

    def describe(self) -> dict:
        return dict(self.spec, matched=self.matched, applied=self.applied)


def _str(spec, key, default):
    v = spec.get(key, default)
    if v is not None and not isinstance(v, str):
        raise ValueError(f"rule {spec!r}: {key} must be a string")
    return v


def _int(spec, key, default):
    v = spec.get(key, default)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
        raise ValueError(f"rule {spec!r}: {key} must be a non-negative integer")
    return v


def _float(spec, key, default):
    v = spec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError(f"rule {spec!r}: {key} must be a non-negative number")
    return float(v)


class State:
    def __init__(self):
        self.rules: list[Rule] = []
        self.reset_counters()
        # Set (and replaced) whenever the rules change: hung and stalled connections wait on
        # the event current when they started, and close when it fires.
        self.generation = asyncio.Event()

    def reset_counters(self):
        self.requests = collections.Counter({m: 0 for m in ("GET", "PUT", "HEAD", "POST", "DELETE")})
        self.applied = collections.Counter({a: 0 for a in ACTIONS})
        self.log = collections.deque(maxlen=LOG_KEEP)

    def set_rules(self, rules: list[Rule]):
        self.rules = rules
        self.generation.set()
        self.generation = asyncio.Event()

    def choose(self, method: str, path: str, query: str, rng: str = ""):
        """The rule that applies to this request (None: forward untouched) and its index."""
        for i, rule in enumerate(self.rules):
            if rule.matches(method, path, query, rng):
                rule.matched += 1
                if rule.matched <= rule.skip:
                    return None, i
                rule.applied += 1
                self.applied[rule.action] += 1
                return rule, i
        return None, None

    def stats(self) -> dict:
        return {
            "requests": dict(self.requests),
            "applied": dict(self.applied),
            "log": list(self.log),
            "rules": [r.describe() for r in self.rules],
        }


# --------------------------------------------------------------------------------------
# HTTP message heads
# --------------------------------------------------------------------------------------


class Head:
    """A request or response head: the raw bytes (forwarded as they are) and parsed fields."""

    def __init__(self, raw: bytes, lines: list[bytes]):
        self.raw = raw
        self.start = lines[0].decode("latin-1")
        self.headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            text = line.decode("latin-1")
            if text[:1] in (" ", "\t") and self.headers:  # obsolete line folding
                name, value = self.headers[-1]
                self.headers[-1] = (name, value + " " + text.strip())
                continue
            name, sep, value = text.partition(":")
            if not sep or not name or name != name.strip():
                raise HttpError(f"bad header line {text!r}")
            self.headers.append((name.lower(), value.strip()))

    def get_all(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n == name]

    def tokens(self, name: str) -> list[str]:
        """The comma-separated, lowercased tokens of every `name` header."""
        return [t.strip().lower() for v in self.get_all(name) for t in v.split(",") if t.strip()]

    def content_length(self) -> int | None:
        values = {v.strip() for v in self.get_all("content-length")}
        if not values:
            return None
        if len(values) > 1 or not next(iter(values)).isdigit():
            raise HttpError(f"bad Content-Length {sorted(values)}")
        return int(next(iter(values)))

    def is_chunked(self) -> bool:
        te = self.tokens("transfer-encoding")
        if te and te[-1] != "chunked":
            raise HttpError(f"unsupported Transfer-Encoding {te}")
        return bool(te)


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """Reads a message head; None on a clean EOF before its first byte."""
    raw = bytearray()
    lines: list[bytes] = []
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as e:
            if not raw and not e.partial.strip():
                return None
            raise HttpError("connection closed in the middle of a message head") from None
        except asyncio.LimitOverrunError:
            raise HttpError("header line too long") from None
        if not lines and line in (b"\r\n", b"\n"):
            continue  # RFC 9112 2.2: empty lines before a request line are ignored
        raw += line
        if len(raw) > HEAD_LIMIT:
            raise HttpError("message head too long")
        line = line.rstrip(b"\r\n")
        if not line:
            return Head(bytes(raw), lines)
        lines.append(line)


def without_connection_close(raw: bytes) -> bytes:
    """A response head with the "close" token removed from its Connection header(s) (a
    header left empty goes); every other byte stays as it was."""
    out = []
    for line in raw.splitlines(keepends=True):
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() == b"connection":
            ending = line[len(line.rstrip(b"\r\n")):]
            tokens = [t.strip() for t in value.split(b",")]
            kept = [t for t in tokens if t and t.lower() != b"close"]
            if not kept:
                continue
            line = name + b": " + b", ".join(kept) + ending
        out.append(line)
    return b"".join(out)


def persistent(version: str, head: Head) -> bool:
    """Whether the connection may carry another message after this one (RFC 9112 9.3)."""
    conn = head.tokens("connection")
    if "close" in conn:
        return False
    return version == "HTTP/1.1" or "keep-alive" in conn


# --------------------------------------------------------------------------------------
# Body relays. `dst` None discards; `flip_at` XORs 0x01 into the body byte at that offset;
# `stop_after` stops once that many body (data) bytes have been sent. They return True when
# the whole body went through, False when they stopped at `stop_after`.
# --------------------------------------------------------------------------------------


async def _send(dst: asyncio.StreamWriter | None, data: bytes) -> None:
    if dst is not None and data:
        dst.write(data)
        await dst.drain()


def _flip(data: bytes, at: int | None, offset: int) -> bytes:
    """`data` (the body bytes from `offset` on) with the byte at body offset `at` flipped."""
    if at is not None and offset <= at < offset + len(data):
        b = bytearray(data)
        b[at - offset] ^= 0x01
        return bytes(b)
    return data


async def relay_length(src, dst, length: int, flip_at=None, stop_after=None) -> bool:
    done = 0
    while done < length:
        want = min(CHUNK, length - done)
        if stop_after is not None:
            want = min(want, stop_after - done)
            if want <= 0:
                return False
        data = await src.read(want)
        if not data:
            raise asyncio.IncompleteReadError(b"", length - done)
        await _send(dst, _flip(data, flip_at, done))
        done += len(data)
    return stop_after is None or done < stop_after


async def _read_line(src) -> bytes:
    try:
        return await src.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise HttpError("chunk line too long") from None


async def relay_chunked(src, dst, corrupt=False, stop_after=None) -> bool:
    """Relays a chunked body exactly as framed (size lines, extensions, trailers)."""
    sent = 0  # data bytes sent so far
    while True:
        line = await _read_line(src)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(f"bad chunk size line {line[:80]!r}") from None
        if size == 0:
            if stop_after is not None and sent >= stop_after:
                return False
            await _send(dst, line)
            while True:  # trailer fields, then the final empty line
                trailer = await _read_line(src)
                await _send(dst, trailer)
                if trailer in (b"\r\n", b"\n"):
                    return stop_after is None or sent < stop_after
        if stop_after is not None and sent >= stop_after:
            return False
        await _send(dst, line)
        flip_at = size // 2 if corrupt else None
        corrupt = False  # only the first non-empty chunk
        left = None if stop_after is None else stop_after - sent
        if not await relay_length(src, dst, size, flip_at, left):
            return False
        sent += size
        end = await _read_line(src)
        if end not in (b"\r\n", b"\n"):
            raise HttpError("chunk data not followed by CRLF")
        await _send(dst, end)


async def relay_until_close(src, dst, corrupt=False, stop_after=None) -> bool:
    sent = 0
    while True:
        want = CHUNK
        if stop_after is not None:
            want = min(want, stop_after - sent)
            if want <= 0:
                return False
        data = await src.read(want)
        if not data:
            return stop_after is None or sent < stop_after
        if corrupt:
            data = _flip(data, len(data) // 2, 0)
            corrupt = False
        await _send(dst, data)
        sent += len(data)


async def relay_body(kind, length, src, dst, corrupt=False, stop_after=None) -> bool:
    """Relays a body framed as `kind` ("none", "length", "chunked" or "close")."""
    if kind == "length":
        flip_at = length // 2 if corrupt and length > 0 else None
        return await relay_length(src, dst, length, flip_at, stop_after)
    if kind == "chunked":
        return await relay_chunked(src, dst, corrupt, stop_after)
    if kind == "close":
        return await relay_until_close(src, dst, corrupt, stop_after)
    return stop_after is None or stop_after > 0


# --------------------------------------------------------------------------------------
# The proxy
# --------------------------------------------------------------------------------------


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self.state = State()

    async def handle_client(self, reader, writer):
        try:
            while True:
                head = await read_head(reader)
                if head is None or not await self.handle_request(head, reader, writer):
                    break
        except HttpError as e:
            log(f"bad request: {e}; closing the connection")
            try:
                await self.answer(writer, "GET", 400, "text/plain", f"{e}\n".encode(), keep=False)
            except (ConnectionError, OSError):
                pass
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            writer.close()

    async def answer(self, writer, method, status, ctype, body: bytes, keep: bool) -> None:
        """Sends a response of the proxy's own (head only for HEAD)."""
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Fault"
        head = [
            f"HTTP/1.1 {status} {reason}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body)}",
            "Server: coldtier-fault-proxy",
        ]
        if not keep:
            head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(body)
        await writer.drain()

    async def handle_request(self, head: Head, reader, writer) -> bool:
        """Serves one request; True when the client connection may carry another."""
        parts = head.start.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise HttpError(f"bad request line {head.start!r}")
        method, target, version = parts
        if target.startswith(("http://", "https://")):  # absolute form (a proxy request)
            split = urllib.parse.urlsplit(target)
            path, query = split.path, split.query
        else:  # origin form, the usual: /bucket/key?query (a key may hold "//")
            path, _, query = target.partition("?")
        keep = persistent(version, head)
        if head.is_chunked():
            kind, length = "chunked", None
        else:
            length = head.content_length()
            kind = "length" if length else "none"
        if version == "HTTP/1.1" and "100-continue" in head.tokens("expect") and kind != "none":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()

        if path.startswith("/__fault__/"):
            return await self.control(method, path, kind, length, reader, writer, keep)

        st = self.state
        st.requests[method] += 1
        ranges = head.get_all("range")
        rng = ranges[0].strip() if ranges else None
        rule, index = st.choose(method, path, query, rng or "")
        action = rule.action if rule else "forward"
        payload = head.get_all("x-amz-content-sha256")
        entry = {"method": method, "path": path, "query": query, "range": rng,
                 "payload": payload[0].strip() if payload else None,
                 "action": action, "status": None, "rule": index}
        st.log.append(entry)
        shown = f"{method} {target}"

        if action == "status":
            await relay_body(kind, length, reader, None)
            if rule.delay:
                await asyncio.sleep(rule.delay)
            body = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>'
                    f"{rule.code}</Code><Message>fault injected</Message></Error>").encode()
            await self.answer(writer, method, rule.status, "application/xml", body, keep)
            entry["status"] = rule.status
            log(f"{shown} -> status {rule.status} {rule.code}")
            return keep
        if action == "hang":
            await relay_body(kind, length, reader, None)
            log(f"{shown} -> hang (no answer)")
            await self.park(reader)
            return False
        if action == "delay":
            await asyncio.sleep(rule.delay)
        return await self.forward(head, method, shown, kind, length, reader, writer, keep,
                                  rule, entry)

    async def forward(self, head, method, shown, kind, length, reader, writer, keep, rule, entry):
        action = rule.action if rule else "forward"
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream, limit=LINE_LIMIT)
        except OSError as e:
            await relay_body(kind, length, reader, None)
            body = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>BadGateway</Code>'
                    f"<Message>fault proxy: upstream unreachable: {e}</Message></Error>").encode()
            await self.answer(writer, method, 502, "application/xml", body, keep)
            entry["status"] = 502
            log(f"{shown} -> {action}: upstream unreachable ({e}), 502")
            return keep
        try:
            # The request, as received (the Expect header included: see the top comment).
            up_w.write(head.raw)
            await up_w.drain()
            await relay_body(kind, length, reader, up_w,
                             corrupt=(action == "corrupt_request_body"))
            # The response head; interim 1xx responses are dropped (the client got its 100
            # from us already).
            while True:
                try:
                    rhead = await read_head(up_r)
                except (HttpError, ConnectionError, OSError) as e:
                    raise UpstreamError(str(e)) from None
                if rhead is None:
                    raise UpstreamError("upstream closed the connection without answering")
                rparts = rhead.start.split(" ", 2)
                if len(rparts) < 2 or not rparts[0].startswith("HTTP/1.") or not rparts[1].isdigit():
                    raise UpstreamError(f"bad status line {rhead.start!r}")
                status = int(rparts[1])
                if not 100 <= status < 200 or status == 101:
                    break
            if method == "HEAD" or 100 <= status < 200 or status in (204, 304):
                rkind, rlength = "none", 0
            elif rhead.is_chunked():
                rkind, rlength = "chunked", None
            else:
                rlength = rhead.content_length()
                rkind = "close" if rlength is None else "length"

            # Persistence is per hop (RFC 9110 7.6.1). Each upstream connection carries one
            # request anyway, so an upstream "Connection: close" (moto's werkzeug sends it on
            # every response) says nothing about the client's connection: drop it, so that
            # the client keeps its connection as it would with real S3, when the body is
            # self-delimiting. Otherwise the head goes out exactly as received.
            head_out, resp_keep = rhead.raw, persistent(rparts[0], rhead)
            if (keep and not resp_keep and rparts[0] == "HTTP/1.1" and rkind != "close"
                    and status != 101):
                head_out, resp_keep = without_connection_close(rhead.raw), True
            writer.write(head_out)
            entry["status"] = status
            stop_after = rule.after_bytes if action == "stall_response" else None
            try:
                complete = await relay_body(rkind, rlength, up_r, writer,
                                            corrupt=(action == "corrupt_response_body"),
                                            stop_after=stop_after)
                await writer.drain()
            except (HttpError, asyncio.IncompleteReadError) as e:
                # The head is out already: all the client can be told is a closed connection.
                log(f"{shown} -> {action} {status}: response body cut short ({e!r}); closing")
                return False
            if action == "stall_response":
                up_w.close()
                log(f"{shown} -> stall_response after {rule.after_bytes} body bytes, {status}")
                await self.park(reader)
                return False
            if not complete:
                return False
            log(f"{shown} -> {action} {status}")
            return keep and resp_keep and rkind != "close" and status != 101
        except UpstreamError as e:
            # Nothing has reached the client yet: tell it, as S3 would, and go on.
            body = ('<?xml version="1.0" encoding="UTF-8"?><Error><Code>BadGateway</Code>'
                    f"<Message>fault proxy: {e}</Message></Error>").encode()
            await self.answer(writer, method, 502, "application/xml", body, keep=False)
            entry["status"] = 502
            log(f"{shown} -> {action}: {e}, 502")
            return False
        finally:
            up_w.close()

    async def park(self, reader) -> None:
        """Waits, answering nothing, until the client closes or the rules change."""
        changed = asyncio.ensure_future(self.state.generation.wait())

        async def drain():
            try:
                while await reader.read(CHUNK):
                    pass
            except (ConnectionError, OSError):
                pass

        eof = asyncio.ensure_future(drain())
        try:
            await asyncio.wait({changed, eof}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            changed.cancel()
            eof.cancel()

    async def control(self, method, path, kind, length, reader, writer, keep) -> bool:
        """The /__fault__/ API."""
        if kind == "length" and length > CONTROL_BODY_LIMIT:
            raise HttpError("control request body too large")
        body = bytearray()

        class Sink:  # collects the body (relay_body writes to a StreamWriter-like object)
            def write(self, data):
                body.extend(data)
                if len(body) > CONTROL_BODY_LIMIT:
                    raise HttpError("control request body too large")

            async def drain(self):
                pass

        await relay_body(kind, length, reader, Sink())
        if kind == "chunked":  # keep the data, drop the framing
            body = bytearray(_dechunk(bytes(body)))
        st = self.state
        status, reply = 200, None
        if method == "POST" and path == "/__fault__/rules":
            try:
                doc = json.loads(body or b"{}")
                specs = doc.get("rules") if isinstance(doc, dict) else None
                if not isinstance(specs, list):
                    raise ValueError('the body must be {"rules": [RULE, ...]}')
                rules = [Rule(s) for s in specs]
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                status, reply = 400, {"error": str(e)}
            else:
                st.set_rules(rules)
                reply = {"ok": True, "rules": len(rules)}
        elif method == "POST" and path == "/__fault__/reset":
            st.set_rules([])
            st.reset_counters()
            reply = {"ok": True}
        elif method == "GET" and path == "/__fault__/stats":
            reply = st.stats()
        elif method == "GET" and path == "/__fault__/rules":
            reply = {"rules": [r.describe() for r in st.rules]}
        else:
            status, reply = 404, {"error": f"no such fault API: {method} {path}"}
        await self.answer(writer, method, status, "application/json",
                          json.dumps(reply).encode(), keep)
        log(f"{method} {path} -> control {status}")
        return keep


def _dechunk(raw: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        eol = raw.index(b"\n", pos)
        size = int(raw[pos:eol].split(b";", 1)[0].strip(), 16)
        pos = eol + 1
        if size == 0:
            return bytes(out)
        out += raw[pos:pos + size]
        pos = raw.index(b"\n", pos + size) + 1


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description="Fault-injecting HTTP proxy for S3 (coldtier tests).")
    p.add_argument("--upstream", required=True, help="http://HOST:PORT of the S3 server (moto)")
    p.add_argument("--listen", default="127.0.0.1:0", help="127.0.0.1:PORT (0: a free port)")
    p.add_argument("--port-file", help="write the listening port here once listening")
    args = p.parse_args()

    host, sep, port = args.listen.rpartition(":")
    if not sep or host != "127.0.0.1" or not port.isdigit() or int(port) > 65535:
        p.error(f"--listen must be 127.0.0.1:PORT (loopback only), not {args.listen!r}")
    args.listen_port = int(port)

    up = urllib.parse.urlsplit(args.upstream)
    if up.scheme != "http" or not up.hostname or up.path not in ("", "/") or up.query:
        p.error(f"--upstream must be http://HOST:PORT, not {args.upstream!r}")
    try:
        args.upstream_addr = (up.hostname, up.port or 80)
    except ValueError as e:
        p.error(f"--upstream: {e}")
    return args


def write_port_file(path: str, port: int) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


async def main() -> None:
    args = parse_args()
    proxy = Proxy(*args.upstream_addr)
    server = await asyncio.start_server(proxy.handle_client, "127.0.0.1", args.listen_port,
                                        limit=LINE_LIMIT, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    if args.port_file:
        write_port_file(args.port_file, port)
    log(f"listening on 127.0.0.1:{port}, upstream {args.upstream} (pid {os.getpid()})")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch_parent():
        while os.getppid() == PARENT_PID:
            await asyncio.sleep(1)
        log(f"parent process {PARENT_PID} is gone")
        stop.set()

    watcher = asyncio.ensure_future(watch_parent())
    await stop.wait()
    watcher.cancel()
    server.close()
    log("exiting")
    # Hung and stalled connections would otherwise be waited for: leave at once.
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
