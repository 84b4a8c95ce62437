//! The fault harness: `tests/fault_proxy.py` (an HTTP proxy that corrupts, delays, hangs or
//! answers errors on chosen requests) between a coldtier mount and its S3 server, driven
//! from the tests; and kill -9 of the daemon at chosen points.
//!
//! Included as `#[path = "common/faults.rs"] mod faults;` beside `mod common;` and the
//! tiering harness.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running fault proxy; stopped on drop (it also exits when the test process dies).
pub struct FaultProxy {
    child: Child,
    pub port: u16,
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl FaultProxy {
    /// Starts the proxy in front of `upstream` (e.g. moto's endpoint).
    pub fn start(upstream: &str) -> FaultProxy {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fault_proxy.py");
        let child = Command::new("python3")
            .arg(&script)
            .args(["--upstream", upstream, "--listen", "127.0.0.1:0"])
            .arg("--port-file")
            .arg(&port_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("proxy.log")).unwrap(),
            ))
            .spawn()
            .expect("start tests/fault_proxy.py (python3)");
        let t0 = Instant::now();
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.trim().parse::<u16>().ok())
            {
                break p;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the fault proxy did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        FaultProxy {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn call(&self, method: &str, path: &str, body: &str) -> Value {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap_or((&r, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "fault proxy: {r}");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    /// Replaces the rules (see tests/fault_proxy.py for their form).
    pub fn rules(&self, rules: Value) {
        self.call(
            "POST",
            "/__fault__/rules",
            &json!({ "rules": rules }).to_string(),
        );
    }

    /// No rules, counters and log cleared.
    pub fn reset(&self) {
        self.call("POST", "/__fault__/reset", "");
    }

    /// Requests seen and faults applied.
    pub fn stats(&self) -> Value {
        self.call("GET", "/__fault__/stats", "")
    }

    /// How many times `action` was applied.
    pub fn applied(&self, action: &str) -> u64 {
        self.stats()["applied"][action].as_u64().unwrap_or(0)
    }

    /// The S3 requests seen as (method, path) pairs, oldest first.
    pub fn log(&self) -> Vec<(String, String, String)> {
        self.stats()["log"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["method"].as_str().unwrap_or("").to_string(),
                    e["path"].as_str().unwrap_or("").to_string(),
                    e["action"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rule for requests on data objects (`.../data/...`) with `method`.
pub fn on_data(method: &str, action: &str) -> Value {
    json!({"method": method, "path_contains": "/data/", "action": action})
}

/// The pid of the coldtier daemon serving `mnt`, from its runtime record.
pub fn daemon_pid(mnt: &Path) -> Option<i32> {
    let hex: String = mnt
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let p = PathBuf::from(format!("/run/coldtier/mounts/{hex}.pid"));
    std::fs::read_to_string(p)
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}
