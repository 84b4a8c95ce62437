//! Configuration: one TOML file per mount -> a validated `Config`. Every key has a default;
//! an unknown key or a bad value is rejected with its name.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

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
}

/// `[fuse]`: how the mount talks to the kernel.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FuseConfig {
    /// Serve resident files' reads and writes in the kernel (FUSE passthrough).
    pub passthrough: bool,
    /// Request-handling threads (0 = 2 x cores, at least 4).
    pub threads: usize,
    /// How long the kernel may cache attributes, e.g. "1s", "500ms". Changes made through
    /// the mount are always seen at once; this bounds how long a change made to the backing
    /// tree by other means (e.g. another NFS client of the source) can go unseen.
    pub attr_timeout: String,
    /// How long the kernel may cache name lookups.
    pub entry_timeout: String,
    /// O_PATH fds the inode table may hold before it reaches inodes by file handle
    /// (0 = three quarters of RLIMIT_NOFILE).
    pub inode_fds: usize,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            passthrough: true,
            threads: 0,
            attr_timeout: "10s".into(),
            entry_timeout: "10s".into(),
            inode_fds: 0,
        }
    }
}

/// Parses a duration such as "250ms", "1s", "5m", "12h", "60d" (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like \"30s\", \"5m\", \"60d\""))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        "w" => n * 7.0 * 86400.0,
        u => {
            return Err(format!(
                "unknown unit `{u}` in `{s}` (use ms, s, m, h, d, w)"
            ))
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("`{s}` is not a non-negative duration"));
    }
    Ok(Duration::from_secs_f64(secs))
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
        let cfg: Config = toml::from_str(text).map_err(|e| {
            // Name the line and its text (it holds the key) on one line.
            let at = e.span().map(|s| {
                let start = s.start.min(text.len());
                let line = text[..start].matches('\n').count() + 1;
                let content = text.lines().nth(line - 1).unwrap_or("").trim();
                format!("line {line} `{content}`: ")
            });
            let message = format!(
                "{}{}",
                at.unwrap_or_default(),
                e.message().trim().replace('\n', " ")
            );
            ConfigError::Parse {
                path: origin.into(),
                message,
            }
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

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
        Ok(())
    }

    pub fn attr_timeout(&self) -> Duration {
        parse_duration(&self.fuse.attr_timeout).unwrap_or(Duration::from_secs(1))
    }

    pub fn entry_timeout(&self) -> Duration {
        parse_duration(&self.fuse.entry_timeout).unwrap_or(Duration::from_secs(1))
    }

    pub fn threads(&self) -> usize {
        if self.fuse.threads > 0 {
            return self.fuse.threads;
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        (cores * 2).max(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_empty() {
        let c = Config::parse("", "t").unwrap();
        assert!(c.fuse.passthrough);
        assert_eq!(c.attr_timeout(), Duration::from_secs(10));
        assert!(c.threads() >= 4);
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
}
