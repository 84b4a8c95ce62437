//! Configuration: one TOML file per mount -> a validated `Config`. Every key has a default;
//! an unknown key or a bad value is rejected with its name (`section.key`). The raw text
//! and its SHA-256 are what the catalog records as a config version.
//! systemd/coldtier.example.toml shows and explains every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use sha2::{Digest, Sha256};

pub use crate::base::cron::{de_schedule, Schedule};
pub use crate::base::mountinfo::{default_catalog_path, mount_name};
pub use crate::base::units::{parse_duration, parse_size};
pub use crate::catalog::config::{CatalogConfig, DEFAULT_BACKUP_SCHEDULE};
pub use crate::fs::config::{FuseConfig, Readdirplus};
pub use crate::tier::config::{
    MigrateMode, OnArchived, PolicyConfig, RecallConfig, RestoreTier, Verify, DEFAULT_MIN_SIZE,
    DEFAULT_SCHEDULE,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: String,
        key: String,
        message: String,
    },
}

/// The whole configuration of one mount.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub fuse: FuseConfig,
    pub policy: PolicyConfig,
    pub recall: RecallConfig,
    pub catalog: CatalogConfig,
    /// `[costs]`: storage prices per class, for `coldtier stats`.
    pub costs: CostsConfig,
    /// `[store]`, kept as raw TOML: the store module parses it into its own config (it
    /// owns those keys). Here only `store.kind` is checked.
    pub store: Option<toml::Table>,
    /// `[mount]`: SOURCE and MOUNTPOINT, for `coldtier mount --config FILE` alone (systemd).
    pub mount: MountConfig,
    /// `[metrics]`: the opt-in Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[limits]`: bandwidth limits of store transfers.
    pub limits: crate::tier::config::LimitsConfig,
    /// `[pack]`: small files gathered into pack objects.
    pub pack: crate::tier::config::PackConfig,
    /// `[[replica]]`: second (third ...) targets the objects are copied to by `coldtier
    /// replicate`; each a `name` and the keys of a `[store]`. Raw, like `[store]`.
    pub replica: Vec<toml::Table>,
    /// The text this config was parsed from ("" for [`Config::default`]).
    #[serde(skip)]
    text: String,
}

/// `[mount]`: what to serve and where, so that `coldtier mount --config FILE` (the
/// `coldtier@.service` unit) needs nothing else. The command line's SOURCE and MOUNTPOINT,
/// when given, must agree with these.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MountConfig {
    /// The directory to serve (the backing tree).
    pub source: Option<PathBuf>,
    /// Where to mount; none: on `source` itself.
    pub mountpoint: Option<PathBuf>,
    /// When the daemon dies with the mount up (a crash, SIGKILL, the OOM killer), start
    /// another on the same FUSE connection: clients see a pause, not an error. Off: the
    /// mount is left dead (ENOTCONN) until the next `coldtier mount`.
    pub restart_on_crash: bool,
    /// A UUID (e.g. from `uuidgen`) that names this filesystem to file servers whatever
    /// the mount: the mount is made as `fuseblk` on a loop device carrying it, so
    /// nfs-ganesha's handles stay valid across remounts and reboots. None: a plain FUSE
    /// mount, whose device number (and so ganesha's handles) changes at every mount.
    pub fsid: Option<String>,
}

impl MountConfig {
    /// `fsid` in canonical form (lowercase), if set and a UUID (the config check refuses
    /// anything else).
    pub fn fsid_uuid(&self) -> Option<String> {
        self.fsid
            .as_deref()
            .and_then(crate::fs::blockdev::parse_uuid)
    }
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            source: None,
            mountpoint: None,
            restart_on_crash: true,
            fsid: None,
        }
    }
}

/// `[metrics]`: Prometheus metrics over HTTP, off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// A loopback address and port, e.g. "127.0.0.1:9464" or "[::1]:9464".
    pub listen: Option<String>,
}

/// Parses `metrics.listen`: an IP address (loopback only: the endpoint has no
/// authentication) and a port.
pub fn parse_metrics_listen(s: &str) -> Result<std::net::SocketAddr, String> {
    let addr: std::net::SocketAddr = s.trim().parse().map_err(|_| {
        format!("`{s}` is not an address like \"127.0.0.1:9464\" or \"[::1]:9464\"")
    })?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "`{s}` is not a loopback address: the metrics endpoint has no authentication, \
             so it listens on 127.0.0.1 or ::1 only (put a proxy or the Prometheus agent \
             in front of it to reach it from elsewhere)"
        ));
    }
    Ok(addr)
}

/// Whether a config key holds a credential: `secret_key`, `session_token`, and any key
/// named or ending in `secret`, `token`, `password` or `passphrase` (in any section, so
/// that sections added later are covered too).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "password", "passphrase"]
        .iter()
        .any(|w| k == *w || k.ends_with(&format!("_{w}")) || k.ends_with(&format!("-{w}")))
        || k == "secret_key"
        || k == "secret_access_key"
}

/// `text` (a TOML config) with the value of every credential key ([`is_secret_key`])
/// replaced by `"<redacted sha256:XXXXXXXXXXXXXXXX>"`: the first 16 hex digits of a
/// SHA-256 of the value, so that a diff of two versions still shows that a secret
/// changed. Comments and layout stay. Text that is not TOML is replaced as a whole: a
/// redaction that cannot parse must not pass anything through.
pub fn redact_secrets(text: &str) -> String {
    let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else {
        return format!(
            "# (not valid TOML; not recorded, it may hold a credential; sha256 {})\n",
            &hex::encode(Sha256::digest(text.as_bytes()))[..16]
        );
    };
    redact_table(doc.as_table_mut());
    doc.to_string()
}

fn redacted_value(v: &toml_edit::Value) -> toml_edit::Value {
    let raw = match v {
        // Redacted already (a recorded text redacted again): as it is.
        toml_edit::Value::String(s) if is_redacted(s.value()) => return v.clone(),
        toml_edit::Value::String(s) => s.value().clone(),
        other => other.to_string().trim().to_string(),
    };
    let mut h = Sha256::new();
    h.update(b"coldtier-secret-v1\0");
    h.update(raw.as_bytes());
    let hash = hex::encode(h.finalize());
    let mut out = toml_edit::Value::from(format!("<redacted sha256:{}>", &hash[..16]));
    *out.decor_mut() = v.decor().clone();
    out
}

/// `<redacted sha256:` 16 hex digits `>`: what [`redact_secrets`] writes.
fn is_redacted(s: &str) -> bool {
    s.strip_prefix("<redacted sha256:")
        .and_then(|r| r.strip_suffix('>'))
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn redact_item(key: &str, item: &mut toml_edit::Item) {
    match item {
        toml_edit::Item::Table(t) => redact_table(t),
        toml_edit::Item::ArrayOfTables(a) => a.iter_mut().for_each(redact_table),
        toml_edit::Item::Value(v) => redact_value(key, v),
        toml_edit::Item::None => {}
    }
}

fn redact_value(key: &str, v: &mut toml_edit::Value) {
    if is_secret_key(key) {
        *v = redacted_value(v);
        return;
    }
    match v {
        toml_edit::Value::InlineTable(t) => {
            for (k, v) in t.iter_mut() {
                let k = k.get().to_string();
                redact_value(&k, v);
            }
        }
        toml_edit::Value::Array(a) => a.iter_mut().for_each(|v| redact_value(key, v)),
        _ => {}
    }
}

fn redact_table(t: &mut toml_edit::Table) {
    for (k, item) in t.iter_mut() {
        let k = k.get().to_string();
        redact_item(&k, item);
    }
}

impl Config {
    /// Loads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: p.clone(),
            source,
        })?;
        Self::parse(&text, &p)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', " ");
            let Some(span) = e.span() else {
                return ConfigError::Parse {
                    path: origin.into(),
                    message,
                };
            };
            // Name the key (`section.key`) where the text shows it, and the line.
            let start = span.start.min(text.len());
            let line = text[..start].matches('\n').count() + 1;
            match key_at(text, line) {
                Some(key) if is_secret_key(key.rsplit('.').next().unwrap_or(&key)) => {
                    ConfigError::Invalid {
                        path: origin.into(),
                        key,
                        message: format!(
                            "line {line}: not a valid value (the value is a credential: not shown)"
                        ),
                    }
                }
                Some(key) => ConfigError::Invalid {
                    path: origin.into(),
                    key,
                    message: format!("line {line}: {message}"),
                },
                None => {
                    let content = text.lines().nth(line - 1).unwrap_or("").trim();
                    ConfigError::Parse {
                        path: origin.into(),
                        message: format!("line {line} `{content}`: {message}"),
                    }
                }
            }
        })?;
        cfg.validate(origin)?;
        cfg.text = text.to_owned();
        Ok(cfg)
    }

    /// The text this config was parsed from, secrets included: never to be recorded,
    /// logged or printed ([`Config::recorded_text`] is).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text the catalog records as a config version (`Catalog::record_config`): the
    /// file's text with every credential replaced ([`redact_secrets`]).
    pub fn recorded_text(&self) -> String {
        redact_secrets(&self.text)
    }

    /// Appends a comment line to the recorded text (what a reload did to the file's text).
    pub fn note(&mut self, line: &str) {
        self.text = format!("{}\n# coldtier: {line}\n", self.text.trim_end());
    }

    /// What a reload from `self` (in force) to `new` cannot change while mounted: the keys
    /// that differ among [fuse], [mount], [metrics], catalog.path and the store's identity
    /// (kind, endpoint, region, bucket, prefix, path style; a posix root). Named as
    /// `section.key`.
    pub fn fixed_changes(&self, new: &Config) -> Vec<String> {
        let mut out = Vec::new();
        let mut cmp = |name: &str, a: String, b: String| {
            if a != b {
                out.push(name.to_string());
            }
        };
        let (f, g) = (&self.fuse, &new.fuse);
        cmp(
            "fuse.passthrough",
            f.passthrough.to_string(),
            g.passthrough.to_string(),
        );
        cmp("fuse.threads", f.threads.to_string(), g.threads.to_string());
        cmp(
            "fuse.attr_timeout",
            f.attr_timeout.clone(),
            g.attr_timeout.clone(),
        );
        cmp(
            "fuse.entry_timeout",
            f.entry_timeout.clone(),
            g.entry_timeout.clone(),
        );
        cmp(
            "fuse.inode_fds",
            f.inode_fds.to_string(),
            g.inode_fds.to_string(),
        );
        cmp(
            "fuse.readdirplus",
            format!("{:?}", f.readdirplus),
            format!("{:?}", g.readdirplus),
        );
        cmp(
            "mount.source",
            format!("{:?}", self.mount.source),
            format!("{:?}", new.mount.source),
        );
        cmp(
            "mount.mountpoint",
            format!("{:?}", self.mount.mountpoint),
            format!("{:?}", new.mount.mountpoint),
        );
        cmp(
            "mount.restart_on_crash",
            self.mount.restart_on_crash.to_string(),
            new.mount.restart_on_crash.to_string(),
        );
        cmp(
            "mount.fsid",
            format!("{:?}", self.mount.fsid),
            format!("{:?}", new.mount.fsid),
        );
        cmp(
            "metrics.listen",
            format!("{:?}", self.metrics.listen),
            format!("{:?}", new.metrics.listen),
        );
        cmp(
            "catalog.path",
            format!("{:?}", self.catalog.path),
            format!("{:?}", new.catalog.path),
        );
        cmp(
            "replica",
            format!("{:?}", self.replica),
            format!("{:?}", new.replica),
        );
        let id = |c: &Config| -> Vec<(&'static str, String)> {
            use crate::store::StoreConfig as S;
            match c.store_config() {
                Ok(None) => vec![("store", "none".into())],
                Ok(Some(S::S3(s))) => vec![
                    ("store.kind", "s3".into()),
                    ("store.endpoint", format!("{:?}", s.endpoint)),
                    ("store.region", s.region),
                    ("store.bucket", s.bucket),
                    ("store.prefix", s.prefix),
                    ("store.path_style", s.path_style.to_string()),
                ],
                Ok(Some(S::Posix(p))) => vec![
                    ("store.kind", "posix".into()),
                    ("store.root", p.root.display().to_string()),
                ],
                Err(e) => vec![("store", e)],
            }
        };
        let (a, b) = (id(self), id(new));
        if a.len() != b.len() {
            cmp("store.kind", format!("{a:?}"), format!("{b:?}"));
        } else {
            for ((k, x), (_, y)) in a.into_iter().zip(b) {
                cmp(k, x, y);
            }
        }
        out
    }

    /// `new` as a reload may put it in force over `self`: the settings
    /// [`Config::fixed_changes`] names are kept as they are, the store section whole if
    /// its identity changed; the recorded text says which were kept.
    pub fn reloaded(&self, new: Config) -> (Config, Vec<String>) {
        let kept = self.fixed_changes(&new);
        if kept.is_empty() {
            return (new, kept);
        }
        let mut c = new;
        c.fuse = self.fuse.clone();
        c.mount = self.mount.clone();
        c.metrics = self.metrics.clone();
        c.catalog.path = self.catalog.path.clone();
        c.replica = self.replica.clone();
        if kept.iter().any(|k| k.starts_with("store")) {
            c.store = self.store.clone();
        }
        c.text = format!(
            "{}\n# coldtier: reloaded while mounted; these keep the values they had at mount \
             until the next mount: {}\n",
            c.text.trim_end(),
            kept.join(", ")
        );
        (c, kept)
    }

    /// Lower-case hex SHA-256 of [`Config::text`]: the hash the catalog gives the version.
    pub fn text_hash(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }

    /// The catalog file: `catalog.path`, or [`default_catalog_path`] of `mountpoint`.
    pub fn catalog_path(&self, mountpoint: &Path) -> PathBuf {
        self.catalog
            .path
            .clone()
            .unwrap_or_else(|| default_catalog_path(mountpoint))
    }

    /// Where catalog backups go on local disk: `catalog.backup_dir`, or `backups/`
    /// beside the catalog file of `mountpoint`.
    pub fn backup_dir(&self, mountpoint: &Path) -> PathBuf {
        self.catalog.backup_dir.clone().unwrap_or_else(|| {
            let cat = self.catalog_path(mountpoint);
            cat.parent().unwrap_or(Path::new("/")).join("backups")
        })
    }

    /// What the tiering engine reads of this config, for the mount at `mountpoint` (a
    /// `[store]` that does not parse gives the default upload limits here: `validate`
    /// refused it already, and a reload keeps the store in force).
    pub fn tier_settings(&self, mountpoint: &Path) -> crate::tier::config::Settings {
        crate::tier::config::Settings {
            policy: self.policy.clone(),
            recall: self.recall.clone(),
            catalog: self.catalog.clone(),
            backup_dir: self.backup_dir(mountpoint),
            uploads: self
                .store_config()
                .ok()
                .flatten()
                .map(|c| c.upload_limits())
                .unwrap_or_default(),
            limits: self.limits.clone(),
            pack: self.pack.clone(),
        }
    }

    /// `store.kind` ("s3" or "posix"), if a `[store]` section names it.
    pub fn store_kind(&self) -> Option<&str> {
        self.store.as_ref()?.get("kind")?.as_str()
    }

    /// The `[store]` section parsed and checked by the store module (`kind` defaults to
    /// "s3"); `None` without a `[store]` section. Errors name the key.
    pub fn store_config(&self) -> Result<Option<crate::store::StoreConfig>, String> {
        let Some(table) = &self.store else {
            return Ok(None);
        };
        parse_store_table(table, "[store]").map(Some)
    }

    /// The `[[replica]]` targets, parsed and checked like `[store]`: a unique `name` of
    /// letters, digits, `-` and `_` each. Errors name the replica and the key.
    pub fn replica_configs(&self) -> Result<Vec<ReplicaConfig>, String> {
        let mut out: Vec<ReplicaConfig> = Vec::new();
        for (i, table) in self.replica.iter().enumerate() {
            let mut table = table.clone();
            let name = match table.remove("name") {
                Some(toml::Value::String(n)) => n,
                Some(v) => return Err(format!("replica[{i}].name: {v} is not a string")),
                None => {
                    return Err(format!(
                        "replica[{i}].name: missing (each [[replica]] needs a name)"
                    ))
                }
            };
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "replica[{i}].name: `{name}` is not 1 to 64 letters, digits, `-` or `_`"
                ));
            }
            if out.iter().any(|r| r.name == name) {
                return Err(format!("replica[{i}].name: `{name}` names two replicas"));
            }
            let store = parse_store_table(&table, &format!("[[replica]] {name}"))?;
            out.push(ReplicaConfig { name, store });
        }
        Ok(out)
    }
}

/// One `[[replica]]`.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub name: String,
    pub store: crate::store::StoreConfig,
}

/// A `[store]`-like table parsed by the store module (`kind` defaults to "s3"); errors
/// start with `what` and never show a credential's value.
fn parse_store_table(table: &toml::Table, what: &str) -> Result<crate::store::StoreConfig, String> {
    let mut table = table.clone();
    table
        .entry("kind")
        .or_insert_with(|| toml::Value::String("s3".into()));
    let secrets: Vec<String> = table
        .iter()
        .filter(|(k, _)| is_secret_key(k))
        .map(|(_, v)| match v {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .filter(|v| !v.is_empty())
        .collect();
    let cfg: crate::store::StoreConfig =
        toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| {
                // serde names the value it refused: never a credential's.
                let mut m = e.message().trim().to_string();
                for v in &secrets {
                    m = m.replace(v.as_str(), "<redacted>");
                }
                format!("{what}: {m}")
            })?;
    cfg.validate()
        .map_err(|e| format!("{what}: {}", e.message))?;
    Ok(cfg)
}

impl Config {
    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| ConfigError::Invalid {
            path: origin.into(),
            key: key.into(),
            message,
        };
        for (key, v) in [
            ("fuse.attr_timeout", &self.fuse.attr_timeout),
            ("fuse.entry_timeout", &self.fuse.entry_timeout),
        ] {
            let d = parse_duration(v).map_err(|m| bad(key, m))?;
            if d > Duration::from_secs(3600) {
                return Err(bad(key, "must be at most 1h".into()));
            }
        }
        if self.fuse.threads > 256 {
            return Err(bad("fuse.threads", "must be at most 256".into()));
        }
        if let Some(f) = &self.mount.fsid {
            if crate::fs::blockdev::parse_uuid(f).is_none() {
                return Err(bad(
                    "mount.fsid",
                    format!("{f:?} is not a UUID (8-4-4-4-12 hex digits, not all zero; `uuidgen` makes one)"),
                ));
            }
        }

        let p = &self.policy;
        if let Some(max) = p.max_size {
            if max < p.min_size {
                return Err(bad(
                    "policy.max_size",
                    format!("{max} is smaller than policy.min_size ({})", p.min_size),
                ));
            }
        }
        if p.max_files == Some(0) {
            return Err(bad(
                "policy.max_files",
                "must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        if p.max_bytes == Some(0) {
            return Err(bad(
                "policy.max_bytes",
                "must be at least 1 (leave it out for no limit)".into(),
            ));
        }

        let k = &self.pack;
        if k.max_member_size == 0 || k.max_member_size > 1 << 30 {
            return Err(bad(
                "pack.max_member_size",
                format!("{} is not between 1 byte and 1 GiB", k.max_member_size),
            ));
        }
        if k.target_size < k.max_member_size || k.target_size > 5 << 40 {
            return Err(bad(
                "pack.target_size",
                format!(
                    "{} must be at least pack.max_member_size ({}) and at most 5 TiB",
                    k.target_size, k.max_member_size
                ),
            ));
        }
        if !(0.0..=1.0).contains(&k.repack_below) {
            return Err(bad(
                "pack.repack_below",
                format!("{} is not a fraction between 0 and 1", k.repack_below),
            ));
        }
        if !(1..=1_000_000).contains(&k.max_files) {
            return Err(bad(
                "pack.max_files",
                format!("{} is not between 1 and 1000000", k.max_files),
            ));
        }

        let r = &self.recall;
        if !(1..=365).contains(&r.restore_days) {
            return Err(bad(
                "recall.restore_days",
                format!("{} is not between 1 and 365", r.restore_days),
            ));
        }
        if r.wait_timeout.is_zero() || r.wait_timeout > Duration::from_secs(48 * 3600) {
            return Err(bad(
                "recall.wait_timeout",
                "must be more than 0 and at most 48h".into(),
            ));
        }
        if r.poll_interval < Duration::from_secs(1) || r.poll_interval > Duration::from_secs(3600) {
            return Err(bad(
                "recall.poll_interval",
                "must be between 1s and 1h".into(),
            ));
        }
        if r.timeout > Duration::from_secs(24 * 3600) {
            return Err(bad(
                "recall.timeout",
                "must be at most 24h (\"0\" for no limit)".into(),
            ));
        }
        if r.on_archived == OnArchived::Wait && r.poll_interval > r.wait_timeout {
            return Err(bad(
                "recall.poll_interval",
                "is longer than recall.wait_timeout: a waiting open would never see the \
                 restore finish"
                    .into(),
            ));
        }

        let c = &self.catalog;
        if let Some(path) = &c.path {
            let s = path.as_os_str().as_encoded_bytes();
            if !path.is_absolute() || s.ends_with(b"/") || s.contains(&0) {
                return Err(bad(
                    "catalog.path",
                    format!("`{}` is not an absolute file path", path.display()),
                ));
            }
        }
        // Retention is what keeps the old content of an overwritten (or encrypted by
        // ransomware) file: a typo like `retention = "30"` (seconds) must not pass.
        if c.retention < Duration::from_secs(3600) {
            return Err(bad(
                "catalog.retention",
                "must be at least 1h (superseded objects are the only copy of old content)".into(),
            ));
        }

        if let Some(dir) = &c.backup_dir {
            if !dir.is_absolute() {
                return Err(bad(
                    "catalog.backup_dir",
                    format!("`{}` is not an absolute path", dir.display()),
                ));
            }
        }
        crate::catalog::backup::Keep::parse(&c.backup_keep)
            .map_err(|m| bad("catalog.backup_keep", m))?;
        self.costs.validate().map_err(|(key, m)| bad(&key, m))?;

        if let Some(store) = &self.store {
            match store.get("kind") {
                None => {}
                Some(toml::Value::String(k)) if k == "s3" || k == "posix" => {}
                Some(v) => {
                    return Err(bad("store.kind", format!("{v} is not \"s3\" or \"posix\"")))
                }
            }
            if let Err(m) = self.store_config() {
                return Err(ConfigError::Parse {
                    path: origin.into(),
                    message: m,
                });
            }
        }
        if let Err(m) = self.replica_configs() {
            return Err(ConfigError::Parse {
                path: origin.into(),
                message: m,
            });
        }
        let copies = self.policy.copies as usize;
        if copies == 0 || copies > 1 + self.replica.len() {
            return Err(bad(
                "policy.copies",
                format!(
                    "{copies} copies: at least 1 (the store's), at most 1 + the {} [[replica]] targets",
                    self.replica.len()
                ),
            ));
        }
        for (key, path) in [
            ("mount.source", &self.mount.source),
            ("mount.mountpoint", &self.mount.mountpoint),
        ] {
            if let Some(path) = path {
                if !path.is_absolute() || path.as_os_str().as_encoded_bytes().contains(&0) {
                    return Err(bad(
                        key,
                        format!("`{}` is not an absolute path", path.display()),
                    ));
                }
            }
        }
        if self.mount.mountpoint.is_some() && self.mount.source.is_none() {
            return Err(bad(
                "mount.mountpoint",
                "is set without mount.source: set both (or neither, and give them on the \
                 command line)"
                    .into(),
            ));
        }
        if let Some(listen) = &self.metrics.listen {
            parse_metrics_listen(listen).map_err(|m| bad("metrics.listen", m))?;
        }
        Ok(())
    }
}

/// The dotted key (`section.key`) that line `line` (1-based) of TOML `text` sets, or the
/// table it opens; for a line inside a multi-line value, the key that value belongs to.
/// Good enough for error messages: it reads the text the way a person would.
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let header = |l: &str| -> Option<String> {
        let l = l.trim();
        let inner = l
            .strip_prefix("[[")
            .and_then(|r| r.split_once("]]"))
            .or_else(|| l.strip_prefix('[').and_then(|r| r.split_once(']')))?;
        let (name, rest) = inner;
        let rest = rest.trim();
        (is_key(name.trim()) && (rest.is_empty() || rest.starts_with('#')))
            .then(|| name.trim().replace(' ', ""))
    };
    let assigned = |l: &str| -> Option<String> {
        let (k, _) = l.split_once('=')?;
        let k = k.trim();
        is_key(k).then(|| k.replace(' ', ""))
    };
    let here = lines.get(line.checked_sub(1)?)?;
    if let Some(h) = header(here) {
        return Some(h);
    }
    // The key: this line's, or the nearest above (a multi-line array or string).
    let mut key = None;
    let mut i = line - 1;
    loop {
        let l = lines[i];
        if header(l).is_some() {
            break;
        }
        if let Some(k) = assigned(l) {
            key = Some((k, i));
            break;
        }
        if i == 0 {
            break;
        }
        i -= 1;
    }
    let (key, at) = key?;
    let table = lines[..at].iter().rev().find_map(|l| header(l));
    Some(match table {
        Some(t) => format!("{t}.{key}"),
        None => key,
    })
}

/// A bare or dotted TOML key (no quoted parts: ours have none).
fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.split('.').all(|part| {
            let p = part.trim();
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

/// `[costs]`: what a GB-month of storage costs in each storage class (USD; GB = 2^30
/// bytes, as S3 bills), for the estimate `coldtier stats` prints. The defaults are S3's
/// us-east-1 list prices (first 50 TB tier) at the time of writing; put in your own.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CostsConfig {
    #[serde(deserialize_with = "de_price")]
    pub standard: f64,
    #[serde(deserialize_with = "de_price")]
    pub standard_ia: f64,
    #[serde(deserialize_with = "de_price")]
    pub onezone_ia: f64,
    /// The frequent-access tier's price (the class moves objects between tiers itself).
    #[serde(deserialize_with = "de_price")]
    pub intelligent_tiering: f64,
    #[serde(deserialize_with = "de_price")]
    pub glacier_ir: f64,
    /// S3 Glacier Flexible Retrieval.
    #[serde(deserialize_with = "de_price")]
    pub glacier: f64,
    #[serde(deserialize_with = "de_price")]
    pub deep_archive: f64,
    #[serde(deserialize_with = "de_price")]
    pub reduced_redundancy: f64,
    /// Any other class name a store reports (other S3-compatible servers, the posix store).
    #[serde(deserialize_with = "de_price")]
    pub other: f64,
}

impl Default for CostsConfig {
    fn default() -> Self {
        CostsConfig {
            standard: 0.023,
            standard_ia: 0.0125,
            onezone_ia: 0.01,
            intelligent_tiering: 0.023,
            glacier_ir: 0.004,
            glacier: 0.0036,
            deep_archive: 0.00099,
            reduced_redundancy: 0.024,
            other: 0.023,
        }
    }
}

/// Bytes in the GB that storage prices are quoted per.
pub const BILLING_GB: f64 = (1u64 << 30) as f64;

impl CostsConfig {
    /// The price key (`costs.<key>`) and USD per GB-month of a storage class name as the
    /// store reports it (`STANDARD_IA`, `GLACIER` ...).
    pub fn price_of(&self, class: &str) -> (&'static str, f64) {
        match class {
            "STANDARD" => ("standard", self.standard),
            "STANDARD_IA" => ("standard_ia", self.standard_ia),
            "ONEZONE_IA" => ("onezone_ia", self.onezone_ia),
            "INTELLIGENT_TIERING" => ("intelligent_tiering", self.intelligent_tiering),
            "GLACIER_IR" => ("glacier_ir", self.glacier_ir),
            "GLACIER" => ("glacier", self.glacier),
            "DEEP_ARCHIVE" => ("deep_archive", self.deep_archive),
            "REDUCED_REDUNDANCY" => ("reduced_redundancy", self.reduced_redundancy),
            _ => ("other", self.other),
        }
    }

    /// Estimated USD per month to store `bytes` in `class` (no minimums, no requests).
    pub fn monthly(&self, class: &str, bytes: u64) -> f64 {
        bytes as f64 / BILLING_GB * self.price_of(class).1
    }

    /// Err((`costs.<key>`, what is wrong)).
    fn validate(&self) -> Result<(), (String, String)> {
        for (key, v) in [
            ("standard", self.standard),
            ("standard_ia", self.standard_ia),
            ("onezone_ia", self.onezone_ia),
            ("intelligent_tiering", self.intelligent_tiering),
            ("glacier_ir", self.glacier_ir),
            ("glacier", self.glacier),
            ("deep_archive", self.deep_archive),
            ("reduced_redundancy", self.reduced_redundancy),
            ("other", self.other),
        ] {
            if !v.is_finite() || !(0.0..=1000.0).contains(&v) {
                return Err((
                    format!("costs.{key}"),
                    format!(
                        "{v} is not a price in USD per GB-month between 0 and 1000 \
                         (e.g. 0.023)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A price: a float or an integer (TOML `0` is an integer).
fn de_price<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Int(i64),
        Float(f64),
    }
    match Raw::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a price in USD per GB-month, like 0.023"))?
    {
        Raw::Int(n) => Ok(n as f64),
        Raw::Float(f) => Ok(f),
    }
}

#[cfg(test)]
mod cost_tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_wherever_they_stand() {
        let text = "# top\n[store]\nbucket = \"b\" # the bucket\nsecret_key = \"s3cr3t-A\"\n  session_token=\"tok-B\"\r\nstore.secret_key = '''s3cr3t-C'''\n\"secret_key\" = \"\"\"\nmulti-D\"\"\"\nother = 1\n[[replica]]\nname = \"r\"\nsecret_key = \"s3cr3t-E\"\n[x]\ny = { kind = \"s3\", secret_key = \"zz-F\", api_token = \"t-G\" }\npassword = 7\n";
        // The fixture is TOML (a duplicate `secret_key` would make it a whole-text case).
        let text = text.replace("\"secret_key\" = ", "\"store_secret\" = ");
        let r = redact_secrets(&text);
        for s in [
            "s3cr3t-A", "tok-B", "s3cr3t-C", "multi-D", "s3cr3t-E", "zz-F", "t-G", "= 7",
        ] {
            assert!(!r.contains(s), "{s} left in:\n{r}");
        }
        assert!(r.contains("bucket = \"b\" # the bucket\n"), "{r}");
        assert!(r.starts_with("# top\n[store]\n"), "{r}");
        assert!(r.contains("other = 1\n"), "{r}");
        assert_eq!(r.matches("<redacted sha256:").count(), 8, "{r}");
        // Redacting a redacted text changes nothing.
        assert_eq!(redact_secrets(&r), r);
        // The same secret redacts the same way; another one differently.
        let a = redact_secrets("secret_key = \"one\"\n");
        assert_eq!(a, redact_secrets("secret_key = \"one\"\n"));
        assert_ne!(a, redact_secrets("secret_key = \"two\"\n"));
        // Not TOML: nothing of it passes.
        let bad = redact_secrets("secret_key = \"x\" = oops-H");
        assert!(
            !bad.contains("oops-H") && !bad.contains("secret_key"),
            "{bad}"
        );
        // A parse error on a credential's line does not echo its value.
        let e = Config::parse(
            "[store]\nkind = \"s3\"\nbucket = \"b\"\nsecret_key = 123456789\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("123456789"), "{e}");
    }

    #[test]
    fn costs_default_parse_and_name_the_bad_key() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.costs, CostsConfig::default());
        assert_eq!(c.costs.price_of("DEEP_ARCHIVE"), ("deep_archive", 0.00099));
        assert_eq!(c.costs.price_of("WHATEVER").0, "other");
        let c = Config::parse("[costs]\nstandard = 1\nglacier = 0.5\n", "t").unwrap();
        assert_eq!((c.costs.standard, c.costs.glacier), (1.0, 0.5));
        assert!((c.costs.monthly("STANDARD", 3 << 30) - 3.0).abs() < 1e-9);
        for (text, key) in [
            ("[costs]\nstandard = -1\n", "costs.standard"),
            ("[costs]\ndeep_archive = \"cheap\"\n", "costs.deep_archive"),
            ("[costs]\nglacier_ir = nan\n", "costs.glacier_ir"),
        ] {
            let e = Config::parse(text, "t").unwrap_err().to_string();
            assert!(e.contains(key), "{text:?}: {e}");
        }
        let e = Config::parse("[costs]\nstandrd = 1\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("standrd"), "{e}");
    }

    #[test]
    fn the_example_shows_every_cost_key_with_its_default() {
        let text = include_str!("../systemd/coldtier.example.toml");
        let table: toml::Table = toml::from_str(text).unwrap();
        let costs: CostsConfig = table["costs"].clone().try_into().unwrap();
        assert_eq!(costs, CostsConfig::default());
        let shown = table["costs"].as_table().unwrap().len();
        assert_eq!(shown, 9, "every [costs] key is in the example");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of one section of a TOML table, sorted.
    fn sorted_keys<'a>(table: &'a toml::Table, section: &str) -> Vec<&'a str> {
        let mut k: Vec<&str> = table[section]
            .as_table()
            .unwrap()
            .keys()
            .map(|s| s.as_str())
            .collect();
        k.sort();
        k
    }

    #[test]
    fn defaults_when_empty() {
        let c = Config::parse("", "t").unwrap();
        assert!(c.fuse.passthrough);
        assert_eq!(c.fuse.attr_timeout(), Duration::from_secs(10));
        assert!(c.fuse.threads() >= 4);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[fuse]\npasthrough = false\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pasthrough"), "{e}");
        let e = Config::parse("[fusee]\n", "t").unwrap_err().to_string();
        assert!(e.contains("fusee"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::parse("[fuse]\nattr_timeout = \"soon\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("fuse.attr_timeout"), "{e}");
        let e = Config::parse("[fuse]\npassthrough = \"yes\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("passthrough"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("60d").unwrap(),
            Duration::from_secs(60 * 86400)
        );
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    fn err(text: &str) -> String {
        Config::parse(text, "t").unwrap_err().to_string()
    }

    #[test]
    fn every_default() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c, Config::default());
        let p = &c.policy;
        assert!(p.include.is_empty() && p.exclude.is_empty());
        assert_eq!(p.atime_older_than, Duration::from_secs(60 * 86400));
        assert_eq!(p.min_size, 1 << 20);
        assert_eq!(p.max_size, None);
        assert_eq!(p.mode, MigrateMode::DryRun);
        assert_eq!(p.max_files, None);
        assert_eq!(p.max_bytes, None);
        assert_eq!(p.verify, Verify::Checksum);
        assert_eq!(p.schedule.as_ref().unwrap().as_str(), "0 3 * * *");
        let r = &c.recall;
        assert_eq!(r.on_archived, OnArchived::Fail);
        assert_eq!(r.restore_tier, RestoreTier::Standard);
        assert_eq!(r.restore_days, 3);
        assert_eq!(r.wait_timeout, Duration::from_secs(300));
        assert_eq!(r.poll_interval, Duration::from_secs(30));
        assert_eq!(c.catalog.path, None);
        assert_eq!(c.catalog.retention, Duration::from_secs(30 * 86400));
        assert_eq!(c.store, None);
        assert_eq!(c.store_kind(), None);
        // Empty sections are the same as none.
        let c2 = Config::parse("[fuse]\n[policy]\n[recall]\n[catalog]\n", "t").unwrap();
        assert_eq!(
            (c2.fuse, c2.policy, c2.recall, c2.catalog),
            (c.fuse, c.policy, c.recall, c.catalog)
        );
    }

    /// Each key with a bad value (wrong type, out of range, unknown word) and the
    /// `section.key` the error must name.
    #[test]
    fn every_bad_value_names_its_key() {
        let cases = [
            ("[fuse]\npassthrough = \"yes\"", "fuse.passthrough"),
            ("[fuse]\nthreads = -1", "fuse.threads"),
            ("[fuse]\nthreads = 1000", "fuse.threads"),
            ("[mount]\nfsid = \"not-a-uuid\"", "mount.fsid"),
            (
                "[mount]\nfsid = \"00000000-0000-0000-0000-000000000000\"",
                "mount.fsid",
            ),
            ("[mount]\nfsid = 7", "mount.fsid"),
            ("[fuse]\nattr_timeout = \"soon\"", "fuse.attr_timeout"),
            ("[fuse]\nattr_timeout = \"2h\"", "fuse.attr_timeout"),
            ("[fuse]\nentry_timeout = 5", "fuse.entry_timeout"),
            ("[fuse]\ninode_fds = \"many\"", "fuse.inode_fds"),
            ("[fuse]\nreaddirplus = \"never\"", "fuse.readdirplus"),
            ("[policy]\ninclude = \"*.iso\"", "policy.include"),
            ("[pack]\nenabled = \"yes\"", "pack.enabled"),
            ("[pack]\nmax_member_size = 0", "pack.max_member_size"),
            ("[pack]\nmax_member_size = \"2GiB\"", "pack.max_member_size"),
            ("[pack]\ntarget_size = \"1KiB\"", "pack.target_size"),
            ("[pack]\nmax_files = 0", "pack.max_files"),
            ("[pack]\nrepack_below = 1.5", "pack.repack_below"),
            ("[pack]\nlevel = 3", "pack.level"),
            ("[policy]\ninclude = [\"a/[b\"]", "policy.include"),
            ("[policy]\ninclude = [1]", "policy.include"),
            ("[policy]\nexclude = [\"ok\", \"{\"]", "policy.exclude"),
            ("[policy]\nexclude = [\"\"]", "policy.exclude"),
            (
                "[policy]\natime_older_than = \"old\"",
                "policy.atime_older_than",
            ),
            (
                "[policy]\natime_older_than = true",
                "policy.atime_older_than",
            ),
            ("[policy]\natime_older_than = -5", "policy.atime_older_than"),
            ("[policy]\nmin_size = \"big\"", "policy.min_size"),
            ("[policy]\nmin_size = -1", "policy.min_size"),
            ("[policy]\nmin_size = \"1PB\"", "policy.min_size"),
            ("[policy]\nmin_size = \"9000000TiB\"", "policy.min_size"),
            ("[policy]\nmax_size = \"x\"", "policy.max_size"),
            (
                "[policy]\nmin_size = \"2MiB\"\nmax_size = \"1MiB\"",
                "policy.max_size",
            ),
            ("[policy]\nmode = \"fast\"", "policy.mode"),
            ("[policy]\nmode = \"Stub\"", "policy.mode"),
            ("[policy]\nmax_files = 0", "policy.max_files"),
            ("[policy]\nmax_files = -1", "policy.max_files"),
            ("[policy]\nmax_files = \"ten\"", "policy.max_files"),
            ("[policy]\nmax_bytes = 0", "policy.max_bytes"),
            ("[policy]\nmax_bytes = \"lots\"", "policy.max_bytes"),
            ("[policy]\nverify = \"md5\"", "policy.verify"),
            ("[policy]\nschedule = \"every day\"", "policy.schedule"),
            ("[policy]\nschedule = \"0 0 30 2 *\"", "policy.schedule"),
            ("[policy]\nschedule = 5", "policy.schedule"),
            ("[recall]\non_archived = \"block\"", "recall.on_archived"),
            (
                "[recall]\nrestore_tier = \"standard\"",
                "recall.restore_tier",
            ),
            ("[recall]\nrestore_tier = \"Fast\"", "recall.restore_tier"),
            ("[recall]\nrestore_days = 0", "recall.restore_days"),
            ("[recall]\nrestore_days = 366", "recall.restore_days"),
            ("[recall]\nrestore_days = \"3\"", "recall.restore_days"),
            ("[recall]\nwait_timeout = \"0s\"", "recall.wait_timeout"),
            ("[recall]\nwait_timeout = \"3d\"", "recall.wait_timeout"),
            ("[recall]\nwait_timeout = \"x\"", "recall.wait_timeout"),
            ("[recall]\npoll_interval = \"0s\"", "recall.poll_interval"),
            ("[recall]\npoll_interval = \"2h\"", "recall.poll_interval"),
            (
                "[recall]\non_archived = \"wait\"\nwait_timeout = \"1m\"\npoll_interval = \"2m\"",
                "recall.poll_interval",
            ),
            ("[catalog]\npath = \"relative.db\"", "catalog.path"),
            ("[catalog]\npath = \"/var/lib/\"", "catalog.path"),
            ("[catalog]\npath = \"/a\\u0000b\"", "catalog.path"),
            ("[catalog]\npath = 5", "catalog.path"),
            ("[catalog]\nretention = \"30\"", "catalog.retention"),
            ("[catalog]\nretention = \"x\"", "catalog.retention"),
            ("[store]\nkind = \"gcs\"", "store.kind"),
            ("[store]\nkind = 5", "store.kind"),
            // Unknown keys, in each section.
            ("[fuse]\npasthrough = false", "fuse.pasthrough"),
            ("[policy]\natime_older = \"1d\"", "policy.atime_older"),
            ("[recall]\ntier = \"Bulk\"", "recall.tier"),
            ("[catalog]\nretain = \"1d\"", "catalog.retain"),
            ("[polcy]\nmode = \"stub\"", "polcy"),
            ("mode = \"stub\"", "mode"),
        ];
        for (text, key) in cases {
            let e = err(text);
            if std::env::var_os("SHOW_CONFIG_ERRORS").is_some() {
                eprintln!("{e}");
            }
            assert!(
                e.contains(&format!("key `{key}`")),
                "{text:?}: error does not name `{key}`: {e}"
            );
        }
    }

    #[test]
    fn errors_name_the_key_inside_multi_line_values_and_after_comments() {
        let text = "# top\n[fuse]\nthreads = 4\n\n[policy] # cold files\nexclude = [\n  \"ok\",\n  \"a[\",\n]\n";
        let e = err(text);
        assert!(e.contains("key `policy.exclude`"), "{e}");
        assert!(e.contains("pattern #2 `a[`"), "{e}");
        assert!(e.contains("line 6"), "{e}"); // where the value starts
                                              // A syntax error outside any key keeps the line and its text.
        let e = err("[policy\nmode = 1\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn key_locator() {
        let text = "a = 1\n[x]\nb = 2\nc = [\n 1,\n]\n[y.z] # t\nd.e = 3\n[[arr]]\nf=1\n";
        let want = [
            (1, Some("a")),
            (2, Some("x")),
            (3, Some("x.b")),
            (4, Some("x.c")),
            (5, Some("x.c")),
            (6, Some("x.c")),
            (7, Some("y.z")),
            (8, Some("y.z.d.e")),
            (9, Some("arr")),
            (10, Some("arr.f")),
            (11, None),
        ];
        for (line, key) in want {
            assert_eq!(key_at(text, line).as_deref(), key, "line {line}");
        }
        assert_eq!(key_at("", 1), None);
        assert_eq!(key_at("\"quoted key\" = 1", 1), None);
    }

    #[test]
    fn the_shipped_example_parses_and_sets_every_key() {
        let text = include_str!("../systemd/coldtier.example.toml");
        let c = Config::parse(text, "example").unwrap();
        assert_eq!(c.text(), text);
        assert_eq!(
            c.policy.exclude.as_slice(),
            ["*.tmp", "~$*", ".snapshot/", "scratch/"]
        );
        assert_eq!(c.policy.max_size, Some(1 << 40));
        assert_eq!(c.policy.max_files, Some(100_000));
        assert_eq!(c.policy.max_bytes, Some(2 << 40));
        assert_eq!(
            c.catalog.path.as_deref(),
            Some(Path::new("/var/lib/coldtier/srv-share.db"))
        );
        assert_eq!(c.store_kind(), Some("s3"));
        // Apart from the keys marked "example", it shows the defaults.
        let d = Config::default();
        assert_eq!(c.fuse, d.fuse);
        assert_eq!(c.recall.rules.len(), 2);
        assert_eq!(
            RecallConfig {
                rules: Vec::new(),
                max_concurrent: None,
                per_uid_per_minute: None,
                per_uid_bytes_per_minute: None,
                ..c.recall.clone()
            },
            d.recall
        );
        assert_eq!(c.catalog.retention, d.catalog.retention);
        assert_eq!(
            PolicyConfig {
                exclude: d.policy.exclude.clone(),
                max_size: None,
                max_files: None,
                max_bytes: None,
                window: None,
                max_duration: None,
                copies: 1,
                ..c.policy.clone()
            },
            d.policy
        );
        // Every key of every section is there (so the example documents all of them).
        let table: toml::Table = toml::from_str(text).unwrap();
        let keys = |section: &str| sorted_keys(&table, section);
        assert_eq!(
            keys("fuse"),
            [
                "attr_timeout",
                "entry_timeout",
                "inode_fds",
                "passthrough",
                "readdirplus",
                "threads"
            ]
        );
        assert_eq!(
            keys("policy"),
            [
                "atime_older_than",
                "copies",
                "exclude",
                "include",
                "max_bytes",
                "max_duration",
                "max_files",
                "max_size",
                "min_size",
                "mode",
                "schedule",
                "verify",
                "window"
            ]
        );
        assert_eq!(keys("limits"), ["download_bwlimit", "upload_bwlimit"]);
        assert_eq!(c.limits, d.limits);
        assert_eq!(c.policy.max_duration, Some(Duration::from_secs(4 * 3600)));
        assert_eq!(
            c.policy.window.map(|w| w.to_string()).as_deref(),
            Some("01:00-06:00")
        );
        assert_eq!(
            keys("recall"),
            [
                "default_rules",
                "max_concurrent",
                "on_archived",
                "over_budget",
                "per_uid_bytes_per_minute",
                "per_uid_per_minute",
                "poll_interval",
                "restore_days",
                "restore_tier",
                "rules",
                "timeout",
                "wait_timeout"
            ]
        );
        assert_eq!(
            keys("catalog"),
            [
                "backup_dir",
                "backup_keep",
                "backup_schedule",
                "path",
                "retention"
            ]
        );
        assert_eq!(keys("store"), ["bucket", "kind"]);
    }

    #[test]
    fn the_shipped_example_sets_mount_and_metrics() {
        let text = include_str!("../systemd/coldtier.example.toml");
        let c = Config::parse(text, "example").unwrap();
        let table: toml::Table = toml::from_str(text).unwrap();
        let keys = |section: &str| sorted_keys(&table, section);
        assert_eq!(keys("mount"), ["mountpoint", "restart_on_crash", "source"]);
        assert_eq!(keys("metrics"), ["listen"]);
        assert_eq!(
            c.mount,
            MountConfig {
                source: Some("/srv/share".into()),
                mountpoint: Some("/srv/share".into()),
                restart_on_crash: true,
                fsid: None,
            }
        );
        assert_eq!(c.metrics.listen.as_deref(), Some("127.0.0.1:9464"));
        // The example's catalog is the default one of its mount point.
        assert_eq!(
            c.catalog.path.as_deref(),
            Some(default_catalog_path(Path::new("/srv/share")).as_path())
        );
    }

    #[test]
    fn mount_and_metrics_keys() {
        let c = Config::parse("", "t").unwrap();
        assert_eq!(c.mount, MountConfig::default());
        assert_eq!(c.metrics.listen, None);
        for ok in [
            "127.0.0.1:9464",
            "[::1]:9464",
            "127.0.0.2:1",
            " 127.0.0.1:0 ",
        ] {
            let c = Config::parse(&format!("[metrics]\nlisten = \"{ok}\"\n"), "t").unwrap();
            assert!(c.metrics.listen.is_some(), "{ok}");
        }
        for (bad, why) in [
            ("0.0.0.0:9464", "not a loopback address"),
            ("192.168.1.5:9464", "not a loopback address"),
            ("[::]:9464", "not a loopback address"),
            ("localhost:9464", "not an address"),
            ("127.0.0.1", "not an address"),
        ] {
            let e = err(&format!("[metrics]\nlisten = \"{bad}\"\n"));
            assert!(
                e.contains("metrics.listen") && e.contains(why),
                "{bad}: {e}"
            );
        }
        let e = err("[metrics]\nlisten = 9464\n");
        assert!(e.contains("metrics.listen"), "{e}");
        let e = err("[metrics]\nport = 9464\n");
        assert!(e.contains("port"), "{e}");
        let e = err("[mount]\nsource = \"srv/share\"\n");
        assert!(e.contains("mount.source") && e.contains("absolute"), "{e}");
        let e = err("[mount]\nmountpoint = \"/mnt\"\n");
        assert!(
            e.contains("mount.mountpoint") && e.contains("mount.source"),
            "{e}"
        );
        let c = Config::parse("[mount]\nsource = \"/srv/a\"\n", "t").unwrap();
        assert_eq!(c.mount.source.as_deref(), Some(Path::new("/srv/a")));
        assert_eq!(c.mount.mountpoint, None);
    }

    #[test]
    fn values_of_each_kind() {
        let c = Config::parse(
            "[policy]\nmode = \"stub\"\nverify = \"readback\"\nschedule = \"off\"\n\
             atime_older_than = 90\nmin_size = 4096\nmax_size = \"1.5 GiB\"\n\
             [recall]\non_archived = \"wait\"\nrestore_tier = \"Bulk\"\n\
             wait_timeout = \"2h\"\npoll_interval = \"1m\"\nrestore_days = 365\n\
             [catalog]\nretention = \"1h\"\n[store]\nkind = \"posix\"\nroot = \"/x\"\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.policy.mode, MigrateMode::Stub);
        assert_eq!(c.policy.verify, Verify::Readback);
        assert_eq!(c.policy.schedule, None);
        assert_eq!(c.policy.atime_older_than, Duration::from_secs(90));
        assert_eq!(c.policy.min_size, 4096);
        assert_eq!(c.policy.max_size, Some(3 << 29));
        assert_eq!(c.recall.on_archived, OnArchived::Wait);
        assert_eq!(c.recall.restore_tier.as_str(), "Bulk");
        assert_eq!(c.recall.wait_timeout, Duration::from_secs(7200));
        assert_eq!(c.recall.restore_days, 365);
        assert_eq!(c.catalog.retention, Duration::from_secs(3600));
        assert_eq!(c.store_kind(), Some("posix"));
        // The store's other keys are the store module's business.
        assert_eq!(c.store.as_ref().unwrap()["root"].as_str(), Some("/x"));
        let c = Config::parse("[policy]\nschedule = \"\"\n", "t").unwrap();
        assert_eq!(c.policy.schedule, None);
        let c = Config::parse("[policy]\nschedule = \"@hourly\"\n", "t").unwrap();
        assert_eq!(c.policy.schedule.unwrap().as_str(), "@hourly");
        for (m, s) in [
            (MigrateMode::DryRun, "dry-run"),
            (MigrateMode::CopyOnly, "copy-only"),
            (MigrateMode::Stub, "stub"),
        ] {
            assert_eq!(m.as_str(), s);
            let c = Config::parse(&format!("[policy]\nmode = \"{s}\"\n"), "t").unwrap();
            assert_eq!(c.policy.mode, m);
        }
        for t in ["Expedited", "Standard", "Bulk"] {
            let c = Config::parse(&format!("[recall]\nrestore_tier = \"{t}\"\n"), "t").unwrap();
            assert_eq!(c.recall.restore_tier.as_str(), t);
        }
        assert_eq!(OnArchived::Fail.as_str(), "fail");
        assert_eq!(Verify::Checksum.as_str(), "checksum");
    }

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("4096", 4096),
            ("1B", 1),
            ("64KiB", 64 << 10),
            ("64kib", 64 << 10),
            ("64K", 64 << 10),
            ("1MiB", 1 << 20),
            ("1 GiB", 1 << 30),
            ("1.5GiB", 3 << 29),
            ("2TiB", 2 << 40),
            ("1kB", 1000),
            ("1KB", 1000),
            ("500MB", 500_000_000),
            ("3GB", 3_000_000_000),
            ("1TB", 1_000_000_000_000),
            ("0.5KiB", 512),
            ("0.0001KiB", 0),
            (" 7 ", 7),
        ];
        for (s, want) in ok {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for s in [
            "",
            "KiB",
            "1.2.3MiB",
            "1PiB",
            "1 parsec",
            "-1",
            "1e6",
            ".5.",
            "1..5K",
            "1.0000000001K",
            "8388608TiB",
            "99999999999999999999999",
        ] {
            assert!(parse_size(s).is_err(), "{s} was accepted");
        }
        assert_eq!(parse_size("8388607TiB"), Ok(8_388_607 << 40));
    }

    /// One reading of a size wherever one is read: the policy's limits, the store's part
    /// size, and the engine's in-flight budget (which once re-read the raw TOML with other
    /// rules: "16MB" was 16,777,216 bytes in the store and 16,000,000 in the budget).
    #[test]
    fn a_size_reads_the_same_in_every_place() {
        for (text, want) in [
            ("16MB", 16_000_000u64),
            ("16MiB", 16 << 20),
            ("1.5 GiB", 3 << 29),
        ] {
            let c = Config::parse(
                &format!(
                    "[policy]\nmin_size = \"{text}\"\nmax_size = \"{text}\"\nmax_bytes = \"{text}\"\n\
                     [store]\nkind = \"s3\"\nbucket = \"b\"\nregion = \"r\"\npart_size = \"{text}\"\n"
                ),
                "t",
            )
            .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(c.policy.min_size, want, "{text}");
            assert_eq!(c.policy.max_size, Some(want), "{text}");
            assert_eq!(c.policy.max_bytes, Some(want), "{text}");
            let Some(crate::store::StoreConfig::S3(s3)) = c.store_config().unwrap() else {
                panic!("not s3");
            };
            assert_eq!(s3.part_size, want, "{text}");
            let settings = c.tier_settings(Path::new("/m"));
            assert_eq!(settings.uploads.part_size, want, "{text}");
            assert_eq!(settings.policy.min_size, want, "{text}");
        }
    }

    #[test]
    fn text_and_hash_are_what_the_catalog_records() {
        let text = "[policy]\nmode = \"stub\"\n";
        let c = Config::parse(text, "t").unwrap();
        assert_eq!(c.text(), text);
        assert_eq!(c.text_hash().len(), 64);
        let dir = tempfile::tempdir().unwrap();
        let cat = crate::catalog::Catalog::open(dir.path().join("c.db")).unwrap();
        let v = cat.record_config(c.text()).unwrap();
        assert_eq!(v.hash, c.text_hash());
        assert_eq!(v.text, text);
        // A different text is a different hash, even when it means the same.
        let c2 = Config::parse("[policy]\nmode = 'stub'\n", "t").unwrap();
        assert_eq!(c2.policy, c.policy);
        assert_ne!(c2.text_hash(), c.text_hash());
        assert_eq!(
            Config::default().text_hash(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn catalog_paths() {
        let cases = [
            ("/srv/share", "srv-share"),
            ("/srv/share/", "srv-share"),
            ("//srv//./share", "srv-share"),
            ("/", "-"),
            ("/mnt/a-b", "mnt-a\\x2db"),
            ("/mnt/my share", "mnt-my\\x20share"),
            ("/.hidden/x.y", "\\x2ehidden-x.y"),
            ("/mnt/ü", "mnt-\\xc3\\xbc"),
            ("/a:b/c_d", "a:b-c_d"),
        ];
        for (mp, name) in cases {
            assert_eq!(mount_name(Path::new(mp)), name, "{mp}");
        }
        let c = Config::default();
        assert_eq!(
            c.catalog_path(Path::new("/srv/share")),
            Path::new("/var/lib/coldtier/srv-share.db")
        );
        let c = Config::parse("[catalog]\npath = \"/data/c.db\"\n", "t").unwrap();
        assert_eq!(
            c.catalog_path(Path::new("/srv/share")),
            Path::new("/data/c.db")
        );
    }

    #[test]
    fn replicas_parse_and_bad_ones_name_the_replica_and_key() {
        let c = Config::parse(
            "[[replica]]\nname = \"off-site_1\"\nkind = \"posix\"\nroot = \"/srv/copy\"\n",
            "t",
        )
        .unwrap();
        let r = c.replica_configs().unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].name, "off-site_1");
        assert!(matches!(r[0].store, crate::store::StoreConfig::Posix(_)));
        let err = |text: &str| Config::parse(text, "t").unwrap_err().to_string();
        let e = err("[[replica]]\nkind = \"posix\"\nroot = \"/x\"\n");
        assert!(e.contains("replica[0].name"), "{e}");
        let e = err("[[replica]]\nname = \"a b\"\nkind = \"posix\"\nroot = \"/x\"\n");
        assert!(e.contains("replica[0].name") && e.contains("a b"), "{e}");
        let two = "[[replica]]\nname = \"a\"\nkind = \"posix\"\nroot = \"/x\"\n";
        let e = err(&format!("{two}{two}"));
        assert!(
            e.contains("replica[1].name") && e.contains("two replicas"),
            "{e}"
        );
        let e = err(
            "[[replica]]\nname = \"s\"\nbucket = \"b\"\nbukket = 1\nsecret_key = \"hunter2\"\n",
        );
        assert!(e.contains("[[replica]] s") && e.contains("bukket"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        // A replica's secret is redacted in the recorded text, as the store's.
        let c = Config::parse(
            "[[replica]]\nname = \"s\"\nbucket = \"b\"\naccess_key = \"k\"\nsecret_key = \"hunter2\"\n",
            "t",
        )
        .unwrap();
        assert!(!c.recorded_text().contains("hunter2"));
    }
}
