//! Test support (not used by the daemon): starts a moto S3 server on 127.0.0.1 with a free
//! port and stops it on drop, and talks to its control API (buckets, restore timing, raw
//! object writes behind the store's back); and starts a 3-node garage cluster
//! (`GarageCluster`), stopped on drop. scripts/lib/moto.sh and scripts/lib/garage.sh
//! install them.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{RequestChecksum, S3Config};

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

/// Starts a test server: no stdin, stdout and stderr to `log`, and killed with the thread
/// that started it (PR_SET_PDEATHSIG), even if the test itself is killed.
fn spawn_server(cmd: &mut Command, log: std::fs::File) -> Result<Child, String> {
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| e.to_string())
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
            let child = spawn_server(
                Command::new(&bin).args(["-H", "127.0.0.1", "-p", &port.to_string()]),
                logf,
            )
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

    /// Deletes an object with a raw DELETE, behind the store's back (a lifecycle rule, a
    /// person).
    pub fn raw_delete(&self, bucket: &str, full_key: &str) -> Result<(), String> {
        let (st, b) = self.http("DELETE", &format!("/{bucket}/{full_key}"), &[], b"")?;
        if st != 204 && st != 200 {
            return Err(format!(
                "raw DELETE {full_key}: {st} {}",
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

// --- garage ----------------------------------------------------------------------------

/// The garage version scripts/lib/garage.sh installs (and docs/store.md describes).
pub const GARAGE_VERSION: &str = "2.5.0";
/// Where scripts/lib/garage.sh's `garage_install` puts garage.
pub const GARAGE_BIN: &str = "/opt/coldtier-tools/bin/garage";

const GARAGE_INSTALL_HINT: &str =
    "install it with: bash -c '. scripts/lib/garage.sh && garage_install' \
     (cargo install garage, 10-20 min once; scripts/test.sh does it) or set COLDTIER_GARAGE_BIN";

/// The garage binary: `$COLDTIER_GARAGE_BIN`, else [`GARAGE_BIN`].
pub fn garage_bin() -> Result<PathBuf, String> {
    let (p, from_env) = match std::env::var_os("COLDTIER_GARAGE_BIN") {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(GARAGE_BIN), false),
    };
    if p.is_file() {
        return Ok(p);
    }
    Err(if from_env {
        format!(
            "COLDTIER_GARAGE_BIN={} does not exist; {GARAGE_INSTALL_HINT}",
            p.display()
        )
    } else {
        format!(
            "garage is not installed ({} missing): the garage tests need a real garage cluster; {GARAGE_INSTALL_HINT}",
            p.display()
        )
    })
}

/// `n` random bytes from the kernel, hex-encoded.
fn random_hex(n: usize) -> Result<String, String> {
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// One node of a [`GarageCluster`].
struct GarageNode {
    config: PathBuf,
    log: PathBuf,
    s3_port: u16,
    /// `<full node id>@127.0.0.1:<rpc port>`.
    id: String,
    child: Mutex<Option<Child>>,
}

/// A garage cluster of three nodes on 127.0.0.1 (one zone each, replication factor 3,
/// consistency mode `consistent`: read and write quorums of 2, so it serves reads and
/// writes with one node down), with one S3 key allowed on every bucket made through
/// [`GarageCluster::create_bucket`]. Its configs, metadata, data and logs are under the
/// directory given to [`GarageCluster::start`]; every node is killed on drop (and by
/// PR_SET_PDEATHSIG if the test process dies).
pub struct GarageCluster {
    bin: PathBuf,
    nodes: Vec<GarageNode>,
    /// Node 0's S3 API: the one the stores talk to.
    pub endpoint: String,
    pub key_id: String,
    secret: String,
    /// `garage --version`'s first line, e.g. "garage v2.5.0 [features: ...]".
    pub version: String,
}

impl GarageCluster {
    pub const NODES: usize = 3;

    /// Starts three nodes in `dir` (created if missing), connects them, applies a layout
    /// (zones dc1..dc3, 1 GB each), creates a key and waits until the cluster reports
    /// itself healthy. Fails with the install command if garage is missing.
    pub fn start(dir: &Path) -> Result<Self, String> {
        let bin = garage_bin()?;
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .map_err(|e| format!("{} --version: {e}", bin.display()))?;
        let version = String::from_utf8_lossy(&version.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let mut last = String::new();
        // A port picked free can be taken before the node binds it: try again elsewhere.
        for attempt in 0..3 {
            let d = dir.join(format!("cluster-{attempt}"));
            match Self::try_start(&bin, &d, &version) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn try_start(bin: &Path, dir: &Path, version: &str) -> Result<Self, String> {
        let rpc_secret = random_hex(32)?;
        let mut nodes = Vec::new();
        for i in 0..Self::NODES {
            let nd = dir.join(format!("node{i}"));
            std::fs::create_dir_all(&nd).map_err(|e| format!("{}: {e}", nd.display()))?;
            let (rpc, s3) = (free_port()?, free_port()?);
            let config = nd.join("garage.toml");
            // sqlite (bundled into garage) needs no system library; garage's own data
            // dirs; no admin, web or K2V API listens.
            let text = format!(
                "metadata_dir = \"{meta}\"\n\
                 data_dir = \"{data}\"\n\
                 db_engine = \"sqlite\"\n\
                 replication_factor = 3\n\
                 consistency_mode = \"consistent\"\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{rpc_secret}\"\n\
                 \n\
                 [s3_api]\n\
                 s3_region = \"us-east-1\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n",
                meta = nd.join("meta").display(),
                data = nd.join("data").display(),
            );
            write_private(&config, &text)?;
            nodes.push(GarageNode {
                config,
                log: nd.join("garage.log"),
                s3_port: s3,
                id: String::new(),
                child: Mutex::new(None),
            });
        }
        let mut c = GarageCluster {
            bin: bin.to_path_buf(),
            endpoint: format!("http://127.0.0.1:{}", nodes[0].s3_port),
            nodes,
            key_id: String::new(),
            secret: String::new(),
            version: version.to_string(),
        };
        for i in 0..Self::NODES {
            c.start_node(i)?;
        }
        for i in 0..Self::NODES {
            c.wait_rpc(i)?;
            let id = c.cli(i, &["node", "id", "-q"])?.trim().to_string();
            if !id.contains('@') {
                return Err(format!("garage node id of node {i}: {id:?}"));
            }
            c.nodes[i].id = id;
        }
        for i in 1..Self::NODES {
            let id = c.nodes[i].id.clone();
            c.cli(0, &["node", "connect", &id])?;
        }
        for i in 0..Self::NODES {
            let hex = c.nodes[i].id.split('@').next().unwrap_or("").to_string();
            let zone = format!("dc{}", i + 1);
            c.cli(0, &["layout", "assign", "-z", &zone, "-c", "1GB", &hex])?;
        }
        c.cli(0, &["layout", "apply", "--version", "1"])?;
        for i in 0..Self::NODES {
            c.wait_healthy(i, Duration::from_secs(60))?;
        }
        // The key's secret comes back on stdout, never into an error message or a log.
        let out = c.cli_quiet(
            0,
            &["json-api", "CreateKey", "{\"name\":\"coldtier-test\"}"],
        )?;
        let v: serde_json::Value =
            serde_json::from_str(&out).map_err(|_| "CreateKey: not JSON".to_string())?;
        match (v["accessKeyId"].as_str(), v["secretAccessKey"].as_str()) {
            (Some(id), Some(secret)) => {
                c.key_id = id.to_string();
                c.secret = secret.to_string();
            }
            _ => return Err("CreateKey: no accessKeyId/secretAccessKey in the answer".into()),
        }
        Ok(c)
    }

    /// Starts node `i` (again, after [`GarageCluster::stop_node`]) with its config and data.
    pub fn start_node(&self, i: usize) -> Result<(), String> {
        let n = &self.nodes[i];
        let mut slot = n.child.lock().unwrap();
        if slot.is_some() {
            return Ok(());
        }
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .map_err(|e| format!("{}: {e}", n.log.display()))?;
        let child = spawn_server(
            Command::new(&self.bin)
                .arg("-c")
                .arg(&n.config)
                .arg("server")
                .env("RUST_LOG", "garage=info,netapp=warn"),
            logf,
        )
        .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        *slot = Some(child);
        Ok(())
    }

    /// Kills node `i` (SIGKILL, as a crash or a power cut would); its data stays.
    pub fn stop_node(&self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again after [`GarageCluster::stop_node`] and has node 0 connect to
    /// it at once (as an operator would), rather than wait for its reconnection backoff.
    pub fn restart_node(&self, i: usize) -> Result<(), String> {
        self.start_node(i)?;
        self.wait_rpc(i)?;
        if i != 0 {
            self.cli(0, &["node", "connect", &self.nodes[i].id])?;
        }
        Ok(())
    }

    /// Whether node `i`'s process is running.
    pub fn node_running(&self, i: usize) -> bool {
        let mut slot = self.nodes[i].child.lock().unwrap();
        match slot.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The S3 endpoint of node `i`.
    pub fn endpoint_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// Node `i`'s log file.
    pub fn log_of(&self, i: usize) -> &Path {
        &self.nodes[i].log
    }

    /// Waits (up to 60 s) until node `i` answers the CLI over RPC.
    fn wait_rpc(&self, i: usize) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            if !self.node_running(i) {
                return Err(format!(
                    "garage node {i} exited; see {}",
                    self.nodes[i].log.display()
                ));
            }
            match self.cli(i, &["status"]) {
                Ok(_) => return Ok(()),
                Err(e) if t0.elapsed() > Duration::from_secs(60) => {
                    return Err(format!(
                        "garage node {i} did not answer in 60 s: {e}; see {}",
                        self.nodes[i].log.display()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Node `i`'s view of the cluster (`GetClusterHealth`): "healthy", "degraded" or
    /// "unavailable".
    pub fn health(&self, i: usize) -> Result<String, String> {
        let out = self.cli(i, &["json-api", "GetClusterHealth"])?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| format!("GetClusterHealth: not JSON ({e}): {out}"))?;
        v["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("GetClusterHealth: no status: {out}"))
    }

    /// Waits (up to `limit`) until node `i` says the cluster is healthy (connected to
    /// every storage node, the layout applied everywhere).
    pub fn wait_healthy(&self, i: usize, limit: Duration) -> Result<(), String> {
        let t0 = Instant::now();
        loop {
            let h = self.health(i);
            if h.as_deref() == Ok("healthy") {
                return Ok(());
            }
            if t0.elapsed() > limit {
                return Err(format!(
                    "garage node {i}: cluster not healthy after {limit:?}: {h:?}; see {}",
                    self.nodes[i].log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Creates bucket `name` and allows the cluster's key to read, write and own it.
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        self.cli(0, &["bucket", "create", name])?;
        self.cli(
            0,
            &[
                "bucket",
                "allow",
                "--read",
                "--write",
                "--owner",
                name,
                "--key",
                &self.key_id,
            ],
        )?;
        Ok(())
    }

    /// An S3 store configuration for bucket `name` on node 0: path style, the cluster's
    /// key, request checksums "when required" (the setting DESIGN.md gives for garage:
    /// it refuses the SDK's default streaming upload over plain http; coldtier's own
    /// uploads set their checksum header and pass either way, see conformance_garage).
    pub fn s3_config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            bucket: bucket.to_string(),
            path_style: true,
            access_key: Some(self.key_id.clone()),
            secret_key: Some(self.secret.clone()),
            request_checksum: RequestChecksum::WhenRequired,
            ..S3Config::default()
        }
    }

    /// The secret of the cluster's key (for configs the tests write; never print it).
    pub fn secret_key(&self) -> &str {
        &self.secret
    }

    /// `garage -c <node i's config> ARGS`: its stdout, or an error with its stderr.
    pub fn cli(&self, i: usize, args: &[&str]) -> Result<String, String> {
        self.run_cli(i, args, true)
    }

    /// Like `cli`, for answers that hold a secret: the error says only the exit status.
    fn cli_quiet(&self, i: usize, args: &[&str]) -> Result<String, String> {
        self.run_cli(i, args, false)
    }

    fn run_cli(&self, i: usize, args: &[&str], say_why: bool) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        if !out.status.success() {
            // A quiet call's arguments and output may hold a secret: name the command only.
            let (what, why) = if say_why {
                (
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                )
            } else {
                (args[..args.len().min(2)].join(" "), String::new())
            };
            return Err(format!("garage {what} (node {i}): {} {why}", out.status));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for GarageCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }
}

/// Writes a file only its owner can read (it holds the cluster's RPC secret).
fn write_private(p: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| format!("{}: {e}", p.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// An s3s-fs server (a second S3 implementation, one that checks SigV4 signatures and
/// request checksums) on a free port of 127.0.0.1, serving a directory; killed on drop.
/// scripts/lib/s3s.sh installs it (`s3s_install`); `COLDTIER_S3S_BIN` overrides where.
pub struct S3sServer {
    child: Child,
    pub port: u16,
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    root: PathBuf,
}

impl S3sServer {
    /// Starts s3s-fs over `root` (created if missing) with its own credentials and waits
    /// (up to 20 s) until it accepts connections. Fails with the install command if the
    /// binary is missing.
    pub fn start(root: &Path) -> Result<Self, String> {
        let bin = std::env::var("COLDTIER_S3S_BIN")
            .unwrap_or_else(|_| "/opt/coldtier-tools/bin/s3s-fs".to_string());
        if !Path::new(&bin).exists() {
            return Err(format!(
                "s3s-fs is not installed at {bin}: run `. scripts/lib/s3s.sh && s3s_install` \
                 (scripts/test.sh does)"
            ));
        }
        std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
        let port = free_port()?;
        let (key_id, secret) = (
            "coldtier-s3s".to_string(),
            "coldtier-s3s-secret".to_string(),
        );
        let log = std::env::temp_dir().join(format!("coldtier-s3s-{port}.log"));
        let logf = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = spawn_server(
            Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", &key_id, "--secret-key", &secret])
                .arg(root)
                .env_remove("RUST_LOG"),
            logf,
        )
        .map_err(|e| format!("start {bin}: {e}"))?;
        let s = S3sServer {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            key_id,
            secret,
            root: root.to_path_buf(),
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                return Err("s3s-fs did not start within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(s)
    }

    /// Makes bucket `name` (s3s-fs buckets are directories of its root).
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        std::fs::create_dir_all(self.root.join(name)).map_err(|e| e.to_string())
    }

    /// A store config for `bucket` on this server.
    pub fn s3_config(&self, bucket: &str) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint.clone()),
            bucket: bucket.to_string(),
            path_style: true,
            access_key: Some(self.key_id.clone()),
            secret_key: Some(self.secret.clone()),
            ..S3Config::default()
        }
    }
}

impl Drop for S3sServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
