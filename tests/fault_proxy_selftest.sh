#!/usr/bin/env bash
# End-to-end self-test of tests/fault_proxy.py (the fault-injecting S3 proxy the Rust
# integration tests use), against a real moto S3 server.
#
#   bash tests/fault_proxy_selftest.sh
#
# Installs moto if needed (scripts/lib/moto.sh: a venv in /opt/coldtier-tools), starts it,
# starts the proxy in front of it, and checks every fault action and the HTTP plumbing
# (keep-alive, Content-Length and chunked bodies both ways, Expect: 100-continue, HEAD, 204,
# 304) with plain unsigned path-style requests (moto checks no signatures). A second proxy
# in front of a tiny in-process HTTP server covers the response shapes moto never sends
# (chunked, 204, 304, body until close). Prints one PASS/FAIL line per check and exits 0
# only if every check passed. Everything it starts is stopped on exit.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
proxy_py="$here/fault_proxy.py"
# shellcheck source=../scripts/lib/moto.sh
. "$root/scripts/lib/moto.sh"

tmp="$(mktemp -d /tmp/fault-proxy-selftest.XXXXXX)"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    moto_stop
    rm -rf "$tmp"
}
trap cleanup EXIT

# moto checks no signature but refuses anonymous object reads: a dummy SigV4 header will do.
auth='Authorization: AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00'
failed=0
pass() { printf 'PASS %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*"; failed=1; }

# wait_port_file FILE PID: waits (10 s at most) for the proxy started as PID to write FILE.
wait_port_file() {
    local i
    for i in $(seq 1 100); do
        [ -s "$1" ] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

moto_install || { echo "FAIL moto install"; exit 1; }
MOTO_LOG="$tmp/moto.log" moto_start || { echo "FAIL moto start"; exit 1; }

python3 "$proxy_py" --upstream "$MOTO_ENDPOINT" --port-file "$tmp/proxy.port" 2>"$tmp/proxy.log" &
proxy_pid=$!
pids+=("$proxy_pid")
if wait_port_file "$tmp/proxy.port" "$proxy_pid"; then
    pass "proxy starts and writes its port file ($(cat "$tmp/proxy.port"))"
else
    fail "proxy did not write its port file"; cat "$tmp/proxy.log"; exit 1
fi
proxy_port="$(cat "$tmp/proxy.port")"

# ---- the HTTP checks, in Python (standard library only) ----
PROXY_PORT="$proxy_port" MOTO_PORT="$MOTO_PORT" PROXY_PY="$proxy_py" TMPDIR_SELFTEST="$tmp" \
    python3 - <<'PYEOF'
import hashlib, http.client, http.server, json, os, socket, subprocess, sys, threading, time

PROXY = int(os.environ["PROXY_PORT"])
MOTO = int(os.environ["MOTO_PORT"])
TMP = os.environ["TMPDIR_SELFTEST"]
BUCKET = "fault-proxy-selftest"
failures = 0


def check(name, ok, detail=""):
    global failures
    print(("PASS " if ok else "FAIL ") + name + ("" if ok or not detail else f": {detail}"), flush=True)
    if not ok:
        failures += 1


# moto checks no signature, but refuses anonymous reads of objects (403): any SigV4-looking
# Authorization header will do.
AUTH = {"Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/s3/aws4_request, "
                         "SignedHeaders=host, Signature=00"}


def req(port, method, path, body=None, headers=None, timeout=10, conn=None):
    """One request; returns (status, headers dict (lowercase), body bytes). An iterable body
    goes chunked (http.client does that when no Content-Length is given)."""
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=body, headers={**AUTH, **(headers or {})})
    r = c.getresponse()
    data = r.read()
    if conn is None:
        c.close()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, data


def rules(*rs):
    st, _, body = req(PROXY, "POST", "/__fault__/rules", json.dumps({"rules": list(rs)}).encode())
    assert st == 200, (st, body)


def reset():
    st, _, body = req(PROXY, "POST", "/__fault__/reset", b"")
    assert st == 200, (st, body)


def stats():
    return json.loads(req(PROXY, "GET", "/__fault__/stats")[2])


def data(n, seed=1):
    """n deterministic, non-repeating-looking bytes."""
    out = bytearray()
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def one_flip(got, want):
    """Whether `got` is `want` with exactly the middle byte XOR 0x01."""
    if len(got) != len(want):
        return False
    diff = [i for i in range(len(want)) if got[i] != want[i]]
    return diff == [len(want) // 2] and got[len(want) // 2] == want[len(want) // 2] ^ 1


def run(name, fn):
    try:
        fn()
    except Exception as e:  # a check that blew up is a failed check
        check(name, False, f"{type(e).__name__}: {e}")


# --- round trip ---------------------------------------------------------------------
def t_roundtrip():
    reset()
    st, _, _ = req(PROXY, "PUT", f"/{BUCKET}")
    check("create bucket through the proxy", st == 200, f"status {st}")
    body = data(100_000)
    st, _, _ = req(PROXY, "PUT", f"/{BUCKET}/plain", body)
    st2, _, got = req(PROXY, "GET", f"/{BUCKET}/plain")
    check("PUT + GET round trip is byte-identical", st == 200 and st2 == 200 and got == body,
          f"PUT {st}, GET {st2}, {len(got)} bytes")


# --- corrupt_request_body -----------------------------------------------------------
def t_corrupt_request():
    reset()
    rules({"method": "PUT", "path_contains": "/creq", "action": "corrupt_request_body", "times": 1})
    body = data(12345, 2)
    st, _, _ = req(PROXY, "PUT", f"/{BUCKET}/creq", body)
    _, _, stored = req(MOTO, "GET", f"/{BUCKET}/creq")
    check("corrupt_request_body: moto stores the body with its middle byte flipped",
          st == 200 and one_flip(stored, body), f"PUT {st}, stored {len(stored)} bytes")
    st, _, _ = req(PROXY, "PUT", f"/{BUCKET}/creq", body)
    _, _, stored = req(MOTO, "GET", f"/{BUCKET}/creq")
    check("corrupt_request_body times=1: the next PUT is intact", stored == body)


def chunks(body, size):
    for i in range(0, len(body), size):
        yield body[i:i + size]


def t_corrupt_request_chunked():
    reset()
    rules({"method": "PUT", "action": "corrupt_request_body", "times": 1})
    body = data(3000, 3)
    st, _, _ = req(PROXY, "PUT", f"/{BUCKET}/creq-chunked", chunks(body, 1000))
    _, _, stored = req(MOTO, "GET", f"/{BUCKET}/creq-chunked")
    want = bytearray(body)
    want[500] ^= 1  # the middle of the first chunk
    check("corrupt_request_body on a chunked PUT flips a byte of the first chunk",
          st == 200 and stored == bytes(want), f"PUT {st}, stored {len(stored)} bytes")


# --- corrupt_response_body ----------------------------------------------------------
def t_corrupt_response():
    reset()
    body = data(54321, 4)
    req(PROXY, "PUT", f"/{BUCKET}/cresp", body)
    rules({"method": "GET", "path_contains": "cresp", "action": "corrupt_response_body"})
    st, _, got = req(PROXY, "GET", f"/{BUCKET}/cresp")
    _, _, direct = req(MOTO, "GET", f"/{BUCKET}/cresp")
    check("corrupt_response_body: the GET through the proxy has its middle byte flipped",
          st == 200 and one_flip(got, body) and direct == body, f"GET {st}")


# --- status -------------------------------------------------------------------------
def t_status():
    reset()
    rules({"method": "GET", "path_contains": "/st503", "action": "status", "status": 503},
          {"method": "PUT", "path_contains": "/st500", "action": "status", "status": 500},
          {"method": "HEAD", "path_contains": "/st404", "action": "status", "status": 404,
           "code": "NoSuchKey"})
    c = http.client.HTTPConnection("127.0.0.1", PROXY, timeout=5)
    st, h, body = req(PROXY, "GET", f"/{BUCKET}/st503", conn=c)
    check("status 503 comes back with an S3 XML SlowDown error",
          st == 503 and h.get("content-type") == "application/xml"
          and b"<Code>SlowDown</Code>" in body and body.startswith(b"<?xml")
          and int(h.get("content-length", -1)) == len(body), f"{st} {h} {body!r}")
    st, h, body = req(PROXY, "PUT", f"/{BUCKET}/st500", data(200_000, 5), conn=c)
    check("status 500 on a PUT: InternalError, request body read", st == 500
          and b"<Code>InternalError</Code>" in body, f"{st} {body!r}")
    st, h, body = req(PROXY, "HEAD", f"/{BUCKET}/st404", conn=c)
    check("status on a HEAD: custom code, no body sent", st == 404 and body == b"", f"{st} {body!r}")
    sock = c.sock
    st, _, body = req(PROXY, "PUT", f"/{BUCKET}/after-status", b"ok", conn=c)
    check("the connection stays usable after status faults",
          st == 200 and c.sock is sock and sock is not None, f"{st}")
    c.close()
    _, _, got = req(MOTO, "GET", f"/{BUCKET}/st500")
    check("a status fault is not forwarded", b"NoSuchKey" in got)
    rules({"method": "GET", "action": "status", "status": 503, "delay": 0.5, "times": 1})
    t0 = time.monotonic()
    st, _, _ = req(PROXY, "GET", f"/{BUCKET}/plain")
    check("status with delay waits before answering", st == 503 and time.monotonic() - t0 >= 0.5)


# --- hang ---------------------------------------------------------------------------
def t_hang():
    reset()
    rules({"method": "GET", "path_contains": "hang-me", "action": "hang"})
    result = {}

    def hung():
        t0 = time.monotonic()
        try:
            req(PROXY, "GET", f"/{BUCKET}/hang-me", timeout=2)
            result["hung"] = "answered"
        except (socket.timeout, TimeoutError):
            result["hung"] = time.monotonic() - t0

    t = threading.Thread(target=hung)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    st, _, got = req(PROXY, "GET", f"/{BUCKET}/plain", timeout=5)
    other = time.monotonic() - t0
    t.join()
    check("hang: the request times out (2 s client timeout)",
          isinstance(result.get("hung"), float) and result["hung"] >= 1.9, str(result))
    check("hang: a concurrent request on another connection succeeds meanwhile",
          st == 200 and len(got) == 100_000 and other < 1.5, f"{st}, {other:.2f} s")

    # A hung connection is closed when the rules are replaced; a PUT body is read first.
    rules({"method": "*", "path_contains": "hang-me", "action": "hang"})
    s = socket.create_connection(("127.0.0.1", PROXY), timeout=5)
    s.sendall(f"PUT /{BUCKET}/hang-me HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello".encode())
    s.settimeout(0.5)
    try:
        s.recv(1)
        early = "answered"
    except socket.timeout:
        early = None
    rules({"method": "GET", "path_contains": "something-else", "action": "hang"})
    s.settimeout(5)
    try:
        closed = s.recv(1) == b""
    except ConnectionError:
        closed = True
    s.close()
    check("hang: the connection closes when the rules are replaced", early is None and closed,
          f"early={early} closed={closed}")
    _, _, got = req(MOTO, "GET", f"/{BUCKET}/hang-me")
    check("hang: the request was not forwarded", b"NoSuchKey" in got)


# --- stall_response -----------------------------------------------------------------
def t_stall():
    reset()
    rules({"method": "GET", "path_contains": "/plain", "action": "stall_response", "after_bytes": 1000})
    s = socket.create_connection(("127.0.0.1", PROXY), timeout=5)
    s.sendall(f"GET /{BUCKET}/plain HTTP/1.1\r\nHost: x\r\nAuthorization: {AUTH['Authorization']}\r\n"
              "\r\n".encode())
    got = b""
    s.settimeout(1.5)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    except socket.timeout:
        pass
    head, _, body = got.partition(b"\r\n\r\n")
    check("stall_response: the head and exactly after_bytes body bytes, then nothing",
          head.startswith(b"HTTP/1.1 200") and b"100000" in head and body == data(100_000)[:1000],
          f"{head[:40]!r}, {len(body)} body bytes")
    reset()
    s.settimeout(5)
    try:
        closed = s.recv(1) == b""
    except ConnectionError:
        closed = True
    s.close()
    check("stall_response: the connection closes on reset", closed)


# --- delay --------------------------------------------------------------------------
def t_delay():
    reset()
    rules({"method": "GET", "action": "delay", "delay": 1.0, "times": 1})
    t0 = time.monotonic()
    st, _, got = req(PROXY, "GET", f"/{BUCKET}/plain")
    took = time.monotonic() - t0
    t0 = time.monotonic()
    st2, _, _ = req(PROXY, "GET", f"/{BUCKET}/plain")
    took2 = time.monotonic() - t0
    check("delay: the request is answered (correctly) after the delay",
          st == 200 and got == data(100_000) and 1.0 <= took < 3, f"{st} {took:.2f} s")
    check("delay times=1: the next request is not delayed", st2 == 200 and took2 < 0.8, f"{took2:.2f} s")


# --- times and skip -----------------------------------------------------------------
def t_times_skip():
    reset()
    rules({"method": "GET", "path_contains": "/plain", "action": "status", "status": 503,
           "skip": 1, "times": 2},
          {"method": "*", "path_contains": "/plain", "action": "status", "status": 500, "times": 1})
    got = [req(PROXY, "GET", f"/{BUCKET}/plain")[0] for _ in range(5)]
    check("skip=1 times=2, then a later rule times=1: 200 503 503 500 200",
          got == [200, 503, 503, 500, 200], str(got))
    rules({"method": "GET", "query_contains": "partNumber=", "action": "status", "status": 503},
          {"method": "GET", "path_contains": "PLAIN", "action": "status", "status": 500})
    a = req(PROXY, "GET", f"/{BUCKET}/plain?partNumber=1")[0]
    b = req(PROXY, "GET", f"/{BUCKET}/plain?versionId=null")[0]
    c = req(PROXY, "GET", f"/{BUCKET}/plain")[0]
    check("query_contains matches the query; path_contains is case-sensitive",
          (a, b, c) == (503, 200, 200), str((a, b, c)))
    st, _, body = req(PROXY, "POST", "/__fault__/rules",
                      json.dumps({"rules": [{"method": "GET", "action": "explode"}]}).encode())
    st2, _, _ = req(PROXY, "POST", "/__fault__/rules",
                    json.dumps({"rules": [{"method": "GET", "action": "hang", "time": 1}]}).encode())
    check("bad rules (unknown action, unknown key) are refused with 400", st == 400 and st2 == 400,
          f"{st} {st2} {body!r}")


# --- stats --------------------------------------------------------------------------
def t_stats():
    reset()
    rules({"method": "PUT", "path_contains": "/s-err", "action": "status", "status": 503, "times": 1},
          {"method": "GET", "path_contains": "/s-a", "action": "corrupt_response_body", "times": 1},
          {"method": "GET", "path_contains": "/s-b", "action": "delay", "delay": 0.1})
    req(PROXY, "PUT", f"/{BUCKET}/s-a", b"abc")
    req(PROXY, "PUT", f"/{BUCKET}/s-err", b"abc")
    req(PROXY, "PUT", f"/{BUCKET}/s-b", b"abc")
    req(PROXY, "GET", f"/{BUCKET}/s-a")
    req(PROXY, "GET", f"/{BUCKET}/s-a")
    req(PROXY, "GET", f"/{BUCKET}/s-b")
    req(PROXY, "HEAD", f"/{BUCKET}/s-b")
    req(PROXY, "DELETE", f"/{BUCKET}/s-b")
    req(PROXY, "POST", f"/{BUCKET}/s-c?uploads")
    s = stats()
    want_req = {"GET": 3, "PUT": 3, "HEAD": 1, "POST": 1, "DELETE": 1}
    want_app = {"corrupt_request_body": 0, "status": 1, "hang": 0, "corrupt_response_body": 1,
                "delay": 1, "stall_response": 0}
    check("stats: request counts per method (control requests not counted)",
          s["requests"] == want_req, str(s["requests"]))
    check("stats: applied counts per action", s["applied"] == want_app, str(s["applied"]))
    log = [(e["method"], e["path"], e["query"], e["action"], e["status"]) for e in s["log"]]
    want_log = [
        ("PUT", f"/{BUCKET}/s-a", "", "forward", 200),
        ("PUT", f"/{BUCKET}/s-err", "", "status", 503),
        ("PUT", f"/{BUCKET}/s-b", "", "forward", 200),
        ("GET", f"/{BUCKET}/s-a", "", "corrupt_response_body", 200),
        ("GET", f"/{BUCKET}/s-a", "", "forward", 200),
        ("GET", f"/{BUCKET}/s-b", "", "delay", 200),
        ("HEAD", f"/{BUCKET}/s-b", "", "forward", 200),
        ("DELETE", f"/{BUCKET}/s-b", "", "forward", 204),
        ("POST", f"/{BUCKET}/s-c", "uploads", "forward", 200),
    ]
    check("stats: the log lists each request with its action and status", log == want_log,
          json.dumps(log))
    reset()
    s = stats()
    check("reset clears counters and log",
          sum(s["requests"].values()) == 0 and sum(s["applied"].values()) == 0 and s["log"] == [])


# --- big and chunked bodies, Expect, HEAD, keep-alive -------------------------------
def t_bodies():
    reset()
    big = data(16 << 20, 6)
    t0 = time.monotonic()
    st, _, _ = req(PROXY, "PUT", f"/{BUCKET}/big", big, timeout=60)
    st2, _, got = req(PROXY, "GET", f"/{BUCKET}/big", timeout=60)
    check("16 MiB PUT (Content-Length) + GET round trip is byte-identical",
          st == 200 and st2 == 200 and hashlib.sha256(got).digest() == hashlib.sha256(big).digest(),
          f"PUT {st}, GET {st2}, {len(got)} bytes")
    print(f"     (16 MiB up and down in {time.monotonic() - t0:.1f} s)", flush=True)

    body = data(300_001, 7)
    st, _, _ = req(PROXY, "PUT", f"/{BUCKET}/chunked", chunks(body, 65536))
    _, _, got = req(PROXY, "GET", f"/{BUCKET}/chunked")
    check("chunked PUT round trip is byte-identical", st == 200 and got == body, f"PUT {st}, {len(got)} bytes")

    # Expect: 100-continue, by hand: the 100 must come without the body having been sent.
    s = socket.create_connection(("127.0.0.1", PROXY), timeout=3)
    payload = data(5000, 8)
    s.sendall(f"PUT /{BUCKET}/expect HTTP/1.1\r\nHost: x\r\nContent-Length: {len(payload)}\r\n"
              "Expect: 100-continue\r\n\r\n".encode())
    interim = s.recv(4096)
    s.sendall(payload)
    rest = b""
    while b"\r\n\r\n" not in rest:
        rest += s.recv(4096)
    s.close()
    _, _, got = req(MOTO, "GET", f"/{BUCKET}/expect")
    check("Expect: 100-continue gets a 100, then the final answer",
          interim.startswith(b"HTTP/1.1 100") and rest.startswith(b"HTTP/1.1 200") and got == payload,
          f"{interim[:30]!r} {rest[:30]!r}")

    t0 = time.monotonic()
    st, h, got = req(PROXY, "HEAD", f"/{BUCKET}/big", timeout=5)
    check("HEAD is answered at once with the object's Content-Length and no body",
          st == 200 and h.get("content-length") == str(16 << 20) and got == b""
          and time.monotonic() - t0 < 1, f"{st} {h.get('content-length')}")

    c = http.client.HTTPConnection("127.0.0.1", PROXY, timeout=5)
    st1, _, b1 = req(PROXY, "GET", f"/{BUCKET}/plain", conn=c)
    sock = c.sock
    st2, _, _ = req(PROXY, "HEAD", f"/{BUCKET}/plain", conn=c)
    st3, _, b3 = req(PROXY, "PUT", f"/{BUCKET}/ka", b"keep-alive", conn=c)
    st4, _, b4 = req(PROXY, "GET", f"/{BUCKET}/ka", conn=c)
    check("keep-alive: GET, HEAD, PUT, GET on one connection all work",
          (st1, st2, st3, st4) == (200, 200, 200, 200) and b1 == data(100_000) and b4 == b"keep-alive"
          and sock is not None and c.sock is sock, f"{(st1, st2, st3, st4)}")
    c.close()


# --- concurrency, and clients that go away mid-request --------------------------------
def t_concurrency():
    reset()
    results = {}

    def worker(i):
        try:
            c = http.client.HTTPConnection("127.0.0.1", PROXY, timeout=30)
            ok = True
            for j in range(3):
                body = data(50_000 + 1000 * i + j, 100 * i + j)
                st, _, _ = req(PROXY, "PUT", f"/{BUCKET}/conc-{i}", body, conn=c)
                st2, _, got = req(PROXY, "GET", f"/{BUCKET}/conc-{i}", conn=c)
                ok = ok and st == 200 and st2 == 200 and got == body
            c.close()
            results[i] = ok
        except Exception as e:
            results[i] = repr(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = {i: r for i, r in results.items() if r is not True}
    check("16 concurrent keep-alive clients, 3 PUT+GET each, all byte-identical",
          len(results) == 16 and not bad, str(bad))

    # A client that dies half way through a 1 MiB upload, and one that sends garbage.
    s = socket.create_connection(("127.0.0.1", PROXY), timeout=5)
    s.sendall(f"PUT /{BUCKET}/aborted HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n".encode()
              + b"x" * 100_000)
    s.close()
    s = socket.create_connection(("127.0.0.1", PROXY), timeout=5)
    s.sendall(b"this is not HTTP\r\n\r\n")
    garbage = s.recv(100)
    s.close()
    time.sleep(0.2)
    st, _, got = req(PROXY, "GET", f"/{BUCKET}/plain")
    check("clients that abort or send garbage do not disturb the proxy",
          st == 200 and got == data(100_000) and garbage.startswith(b"HTTP/1.1 400"), f"{st} {garbage!r}")


# --- response shapes moto does not produce, from a local server behind a 2nd proxy -----
class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in (b"hello ", b"chunked ", b"world"):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif self.path == "/empty":
            self.send_response(204)
            self.end_headers()
        elif self.path == "/notmod":
            self.send_response(304)
            self.send_header("Content-Length", "1234")
            self.end_headers()
        elif self.path == "/close":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"until the server closes")
            self.close_connection = True

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "999999")
        self.end_headers()

    def do_PUT(self):
        # Echoes the (dechunked) body, chunked back.
        body = b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n"):
                        pass
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass  # the proxy drops upstream connections it stalled on: expected resets


def t_shapes():
    srv = QuietServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port_file = os.path.join(TMP, "proxy2.port")
    p = subprocess.Popen([sys.executable, os.environ["PROXY_PY"], "--upstream",
                          f"http://127.0.0.1:{srv.server_address[1]}", "--port-file", port_file],
                         stderr=open(os.path.join(TMP, "proxy2.log"), "w"))
    try:
        for _ in range(100):
            if os.path.exists(port_file):
                break
            time.sleep(0.1)
        port = int(open(port_file).read())
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
        c.request("GET", "/chunked")
        r = c.getresponse()
        body = r.read()
        check("a chunked response is relayed (data and trailers)",
              r.status == 200 and r.getheader("Transfer-Encoding") == "chunked"
              and body == b"hello chunked world", f"{r.status} {body!r}")
        st2, _, b2 = req(port, "GET", "/empty", conn=c)
        st3, _, b3 = req(port, "GET", "/notmod", conn=c)
        st4, h4, _ = req(port, "HEAD", "/anything", conn=c)
        st5, _, b5 = req(port, "PUT", "/echo", chunks(b"x" * 100_000, 7000), conn=c)
        check("204, 304 (with a Content-Length) and HEAD have no body; the connection goes on",
              (st2, b2, st3, b3, st4, st5) == (204, b"", 304, b"", 200, 200) and b5 == b"x" * 100_000
              and h4.get("content-length") == "999999", f"{(st2, b2, st3, b3, st4, st5)}")
        c.close()
        # A raw look at the chunk framing: extensions and trailers pass as they are.
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        s.sendall(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        while not raw.endswith(b"X-Trailer: yes\r\n\r\n"):
            d = s.recv(4096)
            if not d:
                break
            raw += d
        s.close()
        check("chunk extensions and trailers are relayed byte for byte",
              raw.split(b"\r\n\r\n", 1)[1] == b"6;ext=1\r\nhello \r\n8;ext=1\r\nchunked \r\n"
              b"5;ext=1\r\nworld\r\n0\r\nX-Trailer: yes\r\n\r\n", repr(raw[-80:]))

        rules_port = port

        def rules2(*rs):
            st, _, b = req(rules_port, "POST", "/__fault__/rules", json.dumps({"rules": list(rs)}).encode())
            assert st == 200, b

        rules2({"method": "GET", "action": "corrupt_response_body"})
        st, _, b = req(port, "GET", "/chunked")
        check("corrupt_response_body on a chunked response flips the first chunk's middle byte",
              b == b"hel\x6do chunked world", repr(b))
        st, _, b = req(port, "GET", "/close")
        check("a response read until the upstream closes is relayed (and corruptible)",
              st == 200 and one_flip(b, b"until the server closes"), repr(b))
        rules2({"method": "GET", "action": "stall_response", "after_bytes": 7})
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        s.sendall(b"GET /chunked HTTP/1.1\r\nHost: x\r\n\r\n")
        raw = b""
        s.settimeout(1)
        try:
            while True:
                d = s.recv(4096)
                if not d:
                    break
                raw += d
        except socket.timeout:
            pass
        s.close()
        check("stall_response on a chunked response stops after after_bytes data bytes",
              raw.split(b"\r\n\r\n", 1)[1] == b"6;ext=1\r\nhello \r\n8;ext=1\r\nc", repr(raw[-40:]))
    finally:
        p.terminate()
        p.wait(5)
        srv.shutdown()


for name, fn in [("round trip", t_roundtrip), ("corrupt_request_body", t_corrupt_request),
                 ("corrupt_request_body chunked", t_corrupt_request_chunked),
                 ("corrupt_response_body", t_corrupt_response), ("status", t_status),
                 ("hang", t_hang), ("stall_response", t_stall), ("delay", t_delay),
                 ("times/skip", t_times_skip), ("stats", t_stats), ("bodies", t_bodies),
                 ("concurrency", t_concurrency),
                 ("response shapes", t_shapes)]:
    run(name, fn)
sys.exit(1 if failures else 0)
PYEOF
[ $? -eq 0 ] || failed=1

# ---- curl (a real client with its own Expect: 100-continue logic) ----
if command -v curl >/dev/null; then
    head -c $((3 << 20)) /dev/urandom >"$tmp/curl.bin"
    t0=$(date +%s%N)
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Expect: 100-continue' \
        -T "$tmp/curl.bin" "http://127.0.0.1:$proxy_port/fault-proxy-selftest/curl.bin")
    ms=$((($(date +%s%N) - t0) / 1000000))
    curl -s -o "$tmp/curl.back" -H "$auth" "http://127.0.0.1:$MOTO_PORT/fault-proxy-selftest/curl.bin"
    if [ "$code" = 200 ] && cmp -s "$tmp/curl.bin" "$tmp/curl.back" && [ "$ms" -lt 900 ]; then
        pass "curl PUT with Expect: 100-continue round-trips without waiting ($ms ms)"
    else
        fail "curl PUT with Expect: status $code, $ms ms, identical: $(cmp -s "$tmp/curl.bin" "$tmp/curl.back" && echo yes || echo no)"
    fi
else
    echo "SKIP curl checks (no curl)"
fi

# ---- process behaviour ----
if python3 "$proxy_py" --upstream "$MOTO_ENDPOINT" --listen 0.0.0.0:0 2>/dev/null; then
    fail "a non-loopback --listen address is refused"
else
    pass "a non-loopback --listen address is refused"
fi

# The parent dies: a shell that started the proxy is killed; the proxy must go within ~2 s.
rm -f "$tmp/orphan.port"
bash -c 'python3 "$1" --upstream "$2" --port-file "$3" 2>/dev/null & echo $! >"$4"; wait' _ \
    "$proxy_py" "$MOTO_ENDPOINT" "$tmp/orphan.port" "$tmp/orphan.pid" &
parent=$!
sleep 0.2
orphan="$(cat "$tmp/orphan.pid" 2>/dev/null)"
pids+=("$orphan")
if wait_port_file "$tmp/orphan.port" "$orphan"; then
    kill -9 "$parent"
    wait "$parent" 2>/dev/null
    gone=no
    for _ in $(seq 1 30); do
        kill -0 "$orphan" 2>/dev/null || { gone=yes; break; }
        sleep 0.1
    done
    [ "$gone" = yes ] && pass "the proxy exits when its parent dies" ||
        fail "the proxy outlived its parent by 3 s"
else
    fail "the orphan-test proxy did not start"
fi

# SIGTERM, with a connection hung: it exits at once anyway.
curl -s -m 10 -X POST --data '{"rules":[{"method":"GET","action":"hang"}]}' \
    "http://127.0.0.1:$proxy_port/__fault__/rules" >/dev/null
curl -s -m 30 -H "$auth" "http://127.0.0.1:$proxy_port/fault-proxy-selftest/plain" >/dev/null &
hung_curl=$!
pids+=("$hung_curl")
sleep 0.3
kill -TERM "$proxy_pid"
gone=no
for _ in $(seq 1 30); do
    kill -0 "$proxy_pid" 2>/dev/null || { gone=yes; break; }
    sleep 0.1
done
[ "$gone" = yes ] && pass "SIGTERM stops the proxy (with a hung connection open)" ||
    fail "the proxy is still running 3 s after SIGTERM"
kill "$hung_curl" 2>/dev/null

if [ "$failed" = 0 ]; then
    echo "ALL PASSED"
else
    echo "SOME CHECKS FAILED (proxy log: tests/fault_proxy.py stderr follows)"
    tail -n 40 "$tmp/proxy.log"
fi
exit "$failed"
