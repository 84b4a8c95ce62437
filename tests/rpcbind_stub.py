#!/usr/bin/env python3
"""A stand-in for rpcbind on a Unix socket, for tests/common/share.rs.

nfs-ganesha 4.3 refuses to start with NFSv3 enabled unless it can register its NFS and
MOUNT programs with rpcbind (`__Register_program :DISP :MAJ :Cannot register NFS V3 on
TCP`, exit 2). The harness runs ganesha in a private mount namespace whose /run is a
directory of the test's own, and this script listens on `rpcbind.sock` there: libntirpc
registers through that socket (/var/run/rpcbind.sock) and is told yes. The host's rpcbind
(port 111) is neither needed nor touched; clients find the ports from the URL
(`?nfsport=N&mountport=M`), not from a portmapper.

It answers every rpcbind (program 100000) call with success: SET/UNSET -> TRUE, GETADDR ->
"" (v3/v4) or GETPORT -> 0 (v2), DUMP -> empty list, NULL -> void. It remembers nothing.
It exits when its parent dies or on SIGTERM.

Usage: rpcbind_stub.py SOCKET_PATH [--ready-file FILE]
"""

import os
import signal
import socket
import struct
import sys
import threading

PMAP_PROG = 100000


def recv_record(conn):
    """One RPC record (record marking: 4-byte headers, high bit = last fragment)."""
    data = b""
    while True:
        hdr = recv_exact(conn, 4)
        if hdr is None:
            return None
        (word,) = struct.unpack(">I", hdr)
        frag = recv_exact(conn, word & 0x7FFFFFFF)
        if frag is None:
            return None
        data += frag
        if word & 0x80000000:
            return data


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def reply(xid, vers, proc):
    # REPLY, MSG_ACCEPTED, verifier AUTH_NONE (0, empty), SUCCESS
    head = struct.pack(">IIIIII", xid, 1, 0, 0, 0, 0)
    if proc == 0:  # NULL
        body = b""
    elif proc in (1, 2):  # SET, UNSET
        body = struct.pack(">I", 1)
    elif proc == 3:  # v2 GETPORT -> 0; v3/v4 GETADDR -> empty string
        body = struct.pack(">I", 0)
    elif proc == 4:  # DUMP -> no entries
        body = struct.pack(">I", 0)
    else:
        body = struct.pack(">I", 0)
    msg = head + body
    return struct.pack(">I", 0x80000000 | len(msg)) + msg


def serve(conn):
    with conn:
        while True:
            rec = recv_record(conn)
            if rec is None or len(rec) < 24:
                return
            xid, mtype, _rpcvers, prog, vers, proc = struct.unpack(">IIIIII", rec[:24])
            if mtype != 0 or prog != PMAP_PROG:
                return
            conn.sendall(reply(xid, vers, proc))


def main():
    path = sys.argv[1]
    ready = None
    if len(sys.argv) == 4 and sys.argv[2] == "--ready-file":
        ready = sys.argv[3]
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o666)
    srv.listen(16)
    srv.settimeout(1.0)
    if ready:
        with open(ready, "w") as f:
            f.write("ready\n")
    while True:
        if os.getppid() != parent:
            os._exit(0)
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        conn.settimeout(30)
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
