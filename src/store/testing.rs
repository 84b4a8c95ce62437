//! Test support (not used by the daemon): starts a moto S3 server on 127.0.0.1 with a free
//! port and stops it on drop, and talks to its control API (buckets, restore timing, raw
//! object writes behind the store's back). scripts/lib/moto.sh installs moto.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::S3Config;

/// Where scripts/lib/moto.sh's `moto_install` puts the venv.
pub const MOTO_VENV: &str = "/opt/coldtier-tools/moto-venv";

const INSTALL_HINT: &str =
    "install it with: bash -c '. scripts/lib/moto.sh && moto_install' (or set COLDTIER_MOTO_BIN)";

/// The moto_server to run: `$COLDTIER_MOTO_BIN`, else the venv's.
pub fn moto_bin() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("COLDTIER_MOTO_BIN") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "COLDTIER_MOTO_BIN={} does not exist; {INSTALL_HINT}",
                p.display()
            ))
        };
    }
    let p = PathBuf::from(MOTO_VENV).join("bin/moto_server");
    if !p.is_file() {
        return Err(format!(
            "moto is not installed ({} missing): the S3 tests need a real moto server; {INSTALL_HINT}",
            p.display()
        ));
    }
    // Without the crc32c module moto silently computes CRC32 where CRC32C is asked for.
    let py = PathBuf::from(MOTO_VENV).join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import crc32c"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Err(format!(
            "the moto venv lacks the crc32c module (moto would compute CRC32 instead); {INSTALL_HINT}"
        ));
    }
    Ok(p)
}

/// A running moto server, killed on drop.
pub struct MotoServer {
    child: Child,
    pub port: u16,
    pub endpoint: String,
    pub log: PathBuf,
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

impl MotoServer {
    /// Starts moto on a free port and waits (up to 30 s) until it answers.
    pub fn start() -> Result<Self, String> {
        let bin = moto_bin()?;
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::env::temp_dir().join(format!("coldtier-moto-{port}.log"));
            let logf =
                std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(logf.try_clone().map_err(|e| e.to_string())?)
                .stderr(logf);
            // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
            // The server dies with the thread that started it, even if the test is killed.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .map_err(|e| format!("starting {}: {e}", bin.display()))?;
            let mut m = MotoServer {
                child,
                port,
                endpoint: format!("http://127.0.0.1:{port}"),
                log,
            };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(st)) = m.child.try_wait() {
                    last = format!("moto_server exited ({st}); see {}", m.log.display());
                    break;
                }
                if let Ok((200, _)) = m.http("GET", "/moto-api/data.json", &[], b"") {
                    return Ok(m);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if last.is_empty() {
                last = format!(
                    "moto_server did not answer in 30 s; see {}",
                    m.log.display()
                );
            }
        }
        Err(last)
    }

    /// A plain HTTP/1.1 request with a dummy signature; moto accepts those.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.port,
            body.len()
        );
        // moto checks no signature, but treats a request without one as anonymous (and
        // refuses it a private object): give it the credentials `s3_config` uses.
        req.push_str("Authorization: AWS4-HMAC-SHA256 Credential=coldtier-test/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        s.write_all(body).map_err(|e| e.to_string())?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).map_err(|e| e.to_string())?;
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no end of headers")?;
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {head}"))?;
        let mut body = resp[split + 4..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body)?;
        }
        Ok((status, body))
    }

    /// Creates a bucket, versioned if asked.
    pub fn create_bucket(&self, name: &str, versioned: bool) -> Result<(), String> {
        let (st, b) = self.http("PUT", &format!("/{name}"), &[], b"")?;
        if st != 200 {
            return Err(format!(
                "create bucket {name}: {st} {}",
                String::from_utf8_lossy(&b)
            ));
        }
        if versioned {
            let xml = b"<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Status>Enabled</Status></VersioningConfiguration>";
            let (st, b) = self.http("PUT", &format!("/{name}?versioning"), &[], xml)?;
            if st != 200 {
                return Err(format!(
                    "versioning {name}: {st} {}",
                    String::from_utf8_lossy(&b)
                ));
            }
        }
        Ok(())
    }

    /// moto's restore clock: an archived object looks restored for `secs` after its
    /// creation, then in progress for `secs` from the first look after that, then restored.
    pub fn set_restore_seconds(&self, secs: u64) -> Result<(), String> {
        let body = format!(
            "{{\"model_name\":\"s3::keyrestore\",\"transition\":{{\"progression\":\"time\",\"seconds\":{secs}}}}}"
        );
        let (st, b) = self.http(
            "POST",
            "/moto-api/state-manager/set-transition",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )?;
        if st != 201 && st != 200 {
            return Err(format!(
                "set-transition: {st} {}",
                String::from_utf8_lossy(&b)
            ));
        }
        Ok(())
    }

    /// Reads an object with a raw GET (`full_key` includes the store's prefix).
    pub fn raw_get(&self, bucket: &str, full_key: &str) -> Result<Vec<u8>, String> {
        let (st, b) = self.http("GET", &format!("/{bucket}/{full_key}"), &[], b"")?;
        if st != 200 {
            return Err(format!("raw GET {full_key}: {st}"));
        }
        Ok(b)
    }

    /// Overwrites an object with a raw PUT, behind the store's back.
    pub fn raw_put(&self, bucket: &str, full_key: &str, data: &[u8]) -> Result<(), String> {
        let (st, b) = self.http("PUT", &format!("/{bucket}/{full_key}"), &[], data)?;
        if st != 200 {
            return Err(format!(
                "raw PUT {full_key}: {st} {}",
                String::from_utf8_lossy(&b)
            ));
        }
        Ok(())
    }

    /// An S3 store configuration for this server (path style, any credentials).
    pub fn s3_config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            bucket: bucket.to_string(),
            path_style: true,
            access_key: Some("coldtier-test".into()),
            secret_key: Some("coldtier-test-secret".into()),
            ..S3Config::default()
        }
    }

    /// The server's resident memory in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").ok_or("bad chunk")?;
        let size_s = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(size_s.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_s}"))?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err("short chunk".into());
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}
