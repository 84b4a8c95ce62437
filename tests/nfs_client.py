#!/usr/bin/env python3
"""A tiny NFS client over libnfs (ctypes, no headers needed), for tests/common/share.rs.

The libnfs-utils tools (nfs-ls, nfs-cat, nfs-cp) open, use and forget a file handle in
one process. What a test of handles needs is what a kernel client does: keep a file's
handle, and use it again later (after the server restarted, say). This script keeps a
libnfs context and the files it opened for as long as it runs, and can also read through
handle bytes it is given (saved by an earlier session).

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.
  {"op": "mount", "url": "nfs://127.0.0.1/export?version=3&nfsport=N&mountport=M"}
  {"op": "open", "path": "/dir/file"}          -> {"id": 1, "fh": "<hex>"}
  {"op": "read", "id": 1, "offset": 0, "count": 4096}            -> {"data": "<hex>"}
  {"op": "read_fh", "fh": "<hex>", "via": 1, "offset": 0, "count": 4096} -> {"data": ...}
      (a failure also has "nfs3": the server's NFSv3 status, e.g. 70 for NFS3ERR_STALE)
  {"op": "stat", "path": "/dir/file"}           -> {"size": .., "ino": .., "mode": ..}
  {"op": "close", "id": 1}
  {"op": "write", "path": "/dir/new", "data": "<hex>"}   (create or truncate, write, close)
  {"op": "rename", "from": "/a", "to": "/b"}
  {"op": "unlink", "path": "/a"}
Every reply has "ok"; a failed one has "error" (libnfs's message) and "status" (the
negative errno libnfs returned, e.g. -116 for ESTALE).

read_fh reads through raw handle bytes: it lends them to an open file `via` for one
nfs_pread (libnfs 4.0 has no call that opens by handle). That is only meaningful over
NFSv3, which is stateless; over NFSv4 a READ also carries the open's stateid. It first
sends one READ3 of its own through the context's RPC layer (rpc_nfs3_read_async) and keeps
the server's nfsstat3: libnfs 4.0's nfs_pread reports every failed READ as -EFAULT with a
garbled message, which cannot tell NFS3ERR_STALE from any other failure.

Paths are relative to the mounted export and start with "/". Reads are bounded by the
server's maximum read size (libnfs splits larger ones). The script exits at EOF on stdin.
"""

import ctypes
import json
import select
import sys
import time

lib = None
for name in ("libnfs.so.13", "libnfs.so.14", "libnfs.so"):
    try:
        lib = ctypes.CDLL(name)
        break
    except OSError:
        continue
if lib is None:
    print(json.dumps({"ok": False, "error": "libnfs not found (apt-get install libnfs13)"}))
    sys.exit(1)

c_void_p = ctypes.c_void_p


class NfsFh(ctypes.Structure):
    # libnfs 4.0 lib/libnfs-private.h: struct nfs_fh { int len; char *val; };
    _fields_ = [("len", ctypes.c_int), ("val", c_void_p)]


class NfsUrl(ctypes.Structure):
    # include/nfsc/libnfs.h: struct nfs_url { char *server; char *path; char *file; };
    _fields_ = [("server", ctypes.c_char_p), ("path", ctypes.c_char_p), ("file", ctypes.c_char_p)]


class NfsStat64(ctypes.Structure):
    # include/nfsc/libnfs.h: struct nfs_stat_64 (libnfs 4.0)
    _fields_ = [(n, ctypes.c_uint64) for n in (
        "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks",
        "atime", "mtime", "ctime", "atime_nsec", "mtime_nsec", "ctime_nsec", "used")]


class NfsFh3(ctypes.Structure):
    # include/nfsc/libnfs-raw-nfs.h: struct nfs_fh3 { struct { u_int data_len; char *data_val; } data; }
    _fields_ = [("data_len", ctypes.c_uint), ("data_val", c_void_p)]


class Read3Args(ctypes.Structure):
    # include/nfsc/libnfs-raw-nfs.h: struct READ3args { nfs_fh3 file; offset3 offset; count3 count; }
    _fields_ = [("file", NfsFh3), ("offset", ctypes.c_uint64), ("count", ctypes.c_uint32)]


# typedef void (*rpc_cb)(struct rpc_context *rpc, int status, void *data, void *private_data);
RPC_CB = ctypes.CFUNCTYPE(None, c_void_p, ctypes.c_int, c_void_p, c_void_p)
RPC_STATUS_SUCCESS = 0
RPC_STATUS_ERROR = 1

lib.nfs_init_context.restype = c_void_p
lib.nfs_destroy_context.argtypes = [c_void_p]
lib.nfs_get_error.restype = ctypes.c_char_p
lib.nfs_get_error.argtypes = [c_void_p]
lib.nfs_parse_url_dir.restype = ctypes.POINTER(NfsUrl)
lib.nfs_parse_url_dir.argtypes = [c_void_p, ctypes.c_char_p]
lib.nfs_destroy_url.argtypes = [ctypes.POINTER(NfsUrl)]
lib.nfs_mount.argtypes = [c_void_p, ctypes.c_char_p, ctypes.c_char_p]
lib.nfs_set_autoreconnect.argtypes = [c_void_p, ctypes.c_int]
lib.nfs_set_timeout.argtypes = [c_void_p, ctypes.c_int]
lib.nfs_open.argtypes = [c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(c_void_p)]
lib.nfs_close.argtypes = [c_void_p, c_void_p]
lib.nfs_pread.argtypes = [c_void_p, c_void_p, ctypes.c_uint64, ctypes.c_uint64, c_void_p]
lib.nfs_get_fh.restype = ctypes.POINTER(NfsFh)
lib.nfs_get_fh.argtypes = [c_void_p]
lib.nfs_stat64.argtypes = [c_void_p, ctypes.c_char_p, ctypes.POINTER(NfsStat64)]
lib.nfs_creat.argtypes = [c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(c_void_p)]
lib.nfs_ftruncate.argtypes = [c_void_p, c_void_p, ctypes.c_uint64]
lib.nfs_pwrite.argtypes = [c_void_p, c_void_p, ctypes.c_uint64, ctypes.c_uint64, c_void_p]
lib.nfs_rename.argtypes = [c_void_p, ctypes.c_char_p, ctypes.c_char_p]
lib.nfs_unlink.argtypes = [c_void_p, ctypes.c_char_p]
lib.nfs_get_rpc_context.restype = c_void_p
lib.nfs_get_rpc_context.argtypes = [c_void_p]
lib.rpc_nfs3_read_async.argtypes = [c_void_p, RPC_CB, ctypes.POINTER(Read3Args), c_void_p]
lib.rpc_get_fd.argtypes = [c_void_p]
lib.rpc_which_events.argtypes = [c_void_p]
lib.rpc_service.argtypes = [c_void_p, ctypes.c_int]
lib.rpc_get_error.restype = ctypes.c_char_p
lib.rpc_get_error.argtypes = [c_void_p]
lib.nfsstat3_to_str.restype = ctypes.c_char_p
lib.nfsstat3_to_str.argtypes = [ctypes.c_int]
lib.nfsstat3_to_errno.argtypes = [ctypes.c_int]


class Client:
    def __init__(self):
        self.nfs = None
        self.files = {}
        self.next_id = 1
        self.timeout_s = 60.0

    def err(self, status):
        msg = lib.nfs_get_error(self.nfs) if self.nfs else None
        return {"ok": False, "status": status, "error": (msg or b"").decode(errors="replace")}

    def mount(self, req):
        self.nfs = lib.nfs_init_context()
        if not self.nfs:
            return {"ok": False, "error": "nfs_init_context failed"}
        # Reconnect (to the same address and port) when the server went away, as a kernel
        # client would; fail a call after 60 s instead of hanging the test.
        lib.nfs_set_autoreconnect(self.nfs, -1)
        self.timeout_s = int(req.get("timeout_ms", 60000)) / 1000.0
        lib.nfs_set_timeout(self.nfs, int(req.get("timeout_ms", 60000)))
        url = lib.nfs_parse_url_dir(self.nfs, req["url"].encode())
        if not url:
            return self.err(-22)
        try:
            st = lib.nfs_mount(self.nfs, url.contents.server, url.contents.path)
        finally:
            lib.nfs_destroy_url(url)
        return {"ok": True} if st == 0 else self.err(st)

    def open(self, req):
        fh = c_void_p()
        st = lib.nfs_open(self.nfs, req["path"].encode(), 0, ctypes.byref(fh))  # O_RDONLY
        if st != 0:
            return self.err(st)
        i = self.next_id
        self.next_id += 1
        self.files[i] = fh
        return {"ok": True, "id": i, "fh": handle_hex(fh)}

    def read(self, req):
        fh = self.files[req["id"]]
        return self.pread(fh, req["offset"], req["count"])

    def pread(self, fh, offset, count):
        buf = ctypes.create_string_buffer(max(count, 1))
        st = lib.nfs_pread(self.nfs, fh, offset, count, buf)
        if st < 0:
            return self.err(st)
        return {"ok": True, "data": buf.raw[:st].hex()}

    def read3_status(self, raw, offset, count):
        """One READ3 of `raw` through the RPC layer: the server's nfsstat3 (0: NFS3_OK), or
        an error reply if no answer came (RPC failure, timeout)."""
        rpc = lib.nfs_get_rpc_context(self.nfs)
        done = {}

        def cb(_rpc, status, data, _private):
            done["rpc"] = status
            if status == RPC_STATUS_SUCCESS:
                # READ3res begins with its nfsstat3.
                done["nfs3"] = ctypes.cast(data, ctypes.POINTER(ctypes.c_int))[0]
            elif status == RPC_STATUS_ERROR and data:
                done["error"] = ctypes.cast(data, ctypes.c_char_p).value

        callback = RPC_CB(cb)
        keep = ctypes.create_string_buffer(raw, len(raw))
        args = Read3Args(NfsFh3(len(raw), ctypes.cast(keep, c_void_p).value), offset, count)
        if lib.rpc_nfs3_read_async(rpc, callback, ctypes.byref(args), None) != 0:
            return {"ok": False, "status": -5, "error": "rpc_nfs3_read_async: %s"
                    % (lib.rpc_get_error(rpc) or b"").decode(errors="replace")}
        deadline = time.monotonic() + self.timeout_s
        while "rpc" not in done:
            if time.monotonic() > deadline:
                return {"ok": False, "status": -110, "error": "READ3: no reply"}
            fd = lib.rpc_get_fd(rpc)
            revents = 0
            if fd >= 0:
                p = select.poll()
                p.register(fd, lib.rpc_which_events(rpc))
                got = p.poll(100)
                revents = got[0][1] if got else 0
            else:
                time.sleep(0.01)
            if lib.rpc_service(rpc, revents) < 0:
                return {"ok": False, "status": -5, "error": "rpc_service: %s"
                        % (lib.rpc_get_error(rpc) or b"").decode(errors="replace")}
        if "nfs3" not in done:
            return {"ok": False, "status": -5, "error": "READ3: rpc status %d %s"
                    % (done["rpc"], (done.get("error") or b"").decode(errors="replace"))}
        return {"ok": True, "nfs3": done["nfs3"]}

    def read_fh(self, req):
        via = self.files[req["via"]]
        raw = bytes.fromhex(req["fh"])
        probe = self.read3_status(raw, req["offset"], req["count"])
        if not probe["ok"]:
            return probe
        if probe["nfs3"] != 0:
            st = probe["nfs3"]
            return {"ok": False, "status": lib.nfsstat3_to_errno(st), "nfs3": st,
                    "error": (lib.nfsstat3_to_str(st) or b"").decode(errors="replace")}
        keep = ctypes.create_string_buffer(raw, len(raw))
        p = lib.nfs_get_fh(via).contents
        saved = (p.len, p.val)
        p.len, p.val = len(raw), ctypes.cast(keep, c_void_p).value
        try:
            return self.pread(via, req["offset"], req["count"])
        finally:
            p.len, p.val = saved

    def stat(self, req):
        st64 = NfsStat64()
        st = lib.nfs_stat64(self.nfs, req["path"].encode(), ctypes.byref(st64))
        if st != 0:
            return self.err(st)
        return {"ok": True, **{n: getattr(st64, n) for n, _ in NfsStat64._fields_}}

    def close(self, req):
        fh = self.files.pop(req["id"])
        st = lib.nfs_close(self.nfs, fh)
        return {"ok": True} if st == 0 else self.err(st)


    def write(self, req):
        data = bytes.fromhex(req["data"])
        fh = c_void_p()
        st = lib.nfs_creat(self.nfs, req["path"].encode(), 0o644, ctypes.byref(fh))
        if st != 0:
            return self.err(st)
        # nfs_creat of an existing file keeps its data (an UNCHECKED CREATE): truncate.
        st = lib.nfs_ftruncate(self.nfs, fh, 0)
        if st != 0:
            rep = self.err(st)
            lib.nfs_close(self.nfs, fh)
            return rep
        buf = ctypes.create_string_buffer(data, max(len(data), 1))
        done = 0
        while done < len(data):
            n = lib.nfs_pwrite(self.nfs, fh, done, len(data) - done,
                               ctypes.cast(ctypes.addressof(buf) + done, c_void_p))
            if n <= 0:
                rep = self.err(n if n < 0 else -5)
                lib.nfs_close(self.nfs, fh)
                return rep
            done += n
        st = lib.nfs_close(self.nfs, fh)
        return {"ok": True, "written": done} if st == 0 else self.err(st)

    def rename(self, req):
        st = lib.nfs_rename(self.nfs, req["from"].encode(), req["to"].encode())
        return {"ok": True} if st == 0 else self.err(st)

    def unlink(self, req):
        st = lib.nfs_unlink(self.nfs, req["path"].encode())
        return {"ok": True} if st == 0 else self.err(st)


def handle_hex(fh):
    p = lib.nfs_get_fh(fh).contents
    return ctypes.string_at(p.val, p.len).hex()


def main():
    c = Client()
    ops = {"mount": c.mount, "open": c.open, "read": c.read, "read_fh": c.read_fh,
           "stat": c.stat, "close": c.close, "write": c.write, "rename": c.rename,
           "unlink": c.unlink}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            req = json.loads(line)
            rep = ops[req["op"]](req)
        except Exception as e:  # a bad request: say so, keep serving
            rep = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        sys.stdout.write(json.dumps(rep) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
