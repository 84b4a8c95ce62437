//! The tiering engine's config sections: `[policy]` (which files a run tiers, how and
//! when) and `[recall]` (bringing stubs back, archived objects). `crate::config` composes
//! them with the other modules' sections and names the key of a bad value.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::base::cron::{de_schedule, Schedule};
use crate::base::units::{de_duration, de_opt_size, de_size};
pub use crate::catalog::config::CatalogConfig;
pub use crate::store::RestoreTier;
use crate::store::UploadLimits;

use super::policy::Patterns;

/// Everything the engine reads from the config, as one value a reload replaces whole
/// (`Tiering::set_settings`); `crate::config::Config::tier_settings` builds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settings {
    pub policy: PolicyConfig,
    pub recall: RecallConfig,
    /// Retention of superseded objects, the backup schedule and how many backups to keep.
    pub catalog: CatalogConfig,
    /// Where catalog backups are written (resolved from `catalog.backup_dir`).
    pub backup_dir: PathBuf,
    /// The store's upload limits (the defaults when no store is configured).
    pub uploads: UploadLimits,
    /// `[limits]`: bandwidth.
    pub limits: LimitsConfig,
    /// `[pack]`: small files gathered into pack objects.
    pub pack: PackConfig,
}

/// `[pack]`: small files gathered into pack objects (POSIX pax tar archives, each with a
/// member index beside it; docs/architecture.md "Packs"). Off by default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PackConfig {
    /// Files of a policy run no larger than `max_member_size` go into packs.
    pub enabled: bool,
    /// The largest file packed (default 1 MiB); larger ones get an object each.
    #[serde(deserialize_with = "de_size")]
    pub max_member_size: u64,
    /// A pack is closed once its members reach this many bytes (default 16 MiB: the
    /// default `store.part_size`, so that a pack is one PUT, which a store that validates
    /// checksums proves with its answer; a multipart pack on a store that reports no
    /// checksum for multipart objects is read back)...
    #[serde(deserialize_with = "de_size")]
    pub target_size: u64,
    /// ... or this many files (default 10,000). A run's last pack is closed at its end
    /// however small; a member is never split.
    pub max_files: u64,
    /// `coldtier gc` repacks a pack with dead members whose live members take less than
    /// this fraction of its bytes, their tar headers counted (default 0.5; 0: never).
    pub repack_below: f64,
}

impl Default for PackConfig {
    fn default() -> Self {
        PackConfig {
            enabled: false,
            max_member_size: 1 << 20,
            target_size: crate::store::DEFAULT_PART_SIZE,
            max_files: 10_000,
            repack_below: 0.5,
        }
    }
}

/// `[limits]`: bandwidth limits of the mount's store transfers (S3), in bytes per second
/// for all transfers of the mount together (token buckets: bursts of one second's worth);
/// 0 (the default): no limit. A reload changes them at once.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Uploads: policy runs, `archive`, catalog backups to the store.
    #[serde(deserialize_with = "de_size")]
    pub upload_bwlimit: u64,
    /// Downloads: recalls (streamed ones included), `verify --deep`, rebuilds.
    #[serde(deserialize_with = "de_size")]
    pub download_bwlimit: u64,
}

/// `policy.window`: the hours (UTC) scheduled policy runs may work in, "HH:MM-HH:MM"; the
/// end may be before the start (a night: "22:00-06:00").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start_min: u32,
    end_min: u32,
}

impl Window {
    pub fn parse(s: &str) -> Result<Window, String> {
        let bad = || format!("`{s}` is not a window like \"22:00-06:00\" (HH:MM-HH:MM, UTC)");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let hm = |t: &str| -> Result<u32, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(bad)?;
            let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 24 || m > 59 || (h == 24 && m != 0) {
                return Err(bad());
            }
            Ok(h * 60 + m)
        };
        let (start_min, end_min) = (hm(a)?, hm(b)?);
        if start_min % 1440 == end_min % 1440 {
            return Err(format!("`{s}`: a window must not be empty or the whole day (leave policy.window out for no window)"));
        }
        Ok(Window { start_min, end_min })
    }

    /// How long the window stays open from `t` (seconds since the epoch, UTC); None when
    /// `t` is outside it.
    pub fn remaining(&self, t: u64) -> Option<Duration> {
        let now = ((t % 86400) / 60) as u32;
        let secs_into_min = t % 60;
        let (s, e) = (self.start_min % 1440, self.end_min % 1440);
        let inside = if s < e {
            now >= s && now < e
        } else {
            now >= s || now < e
        };
        if !inside {
            return None;
        }
        let left_min = (e + 1440 - now) % 1440;
        Some(Duration::from_secs(
            u64::from(left_min) * 60 - secs_into_min,
        ))
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start_min), hm(self.end_min))
    }
}

fn de_window<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Window>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        return Ok(None);
    }
    Window::parse(&s)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

fn de_opt_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de_duration(d).map(|v| Some(v).filter(|v| !v.is_zero()))
}

/// `[policy]`: which files a policy run tiers, how, how many, and when.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Only paths (relative to SOURCE) matching one of these are tiered; empty: all.
    pub include: Patterns,
    /// Paths matching one of these are never tiered; wins over `include`.
    pub exclude: Patterns,
    /// A file is cold when it has not been used (read: atime, written: mtime) for this long.
    #[serde(deserialize_with = "de_duration")]
    pub atime_older_than: Duration,
    /// Smaller files are left alone (default 1 MiB: see [`DEFAULT_MIN_SIZE`]).
    #[serde(deserialize_with = "de_size")]
    pub min_size: u64,
    /// Larger files are left alone (none: no upper limit).
    #[serde(deserialize_with = "de_opt_size")]
    pub max_size: Option<u64>,
    pub mode: MigrateMode,
    /// At most this many files per run (none: no limit).
    pub max_files: Option<u64>,
    /// At most this many bytes of file data per run (none: no limit).
    #[serde(deserialize_with = "de_opt_size")]
    pub max_bytes: Option<u64>,
    pub verify: Verify,
    /// When runs start (cron, UTC); `None` ("off" or ""): only on `coldtier migrate`.
    #[serde(deserialize_with = "de_schedule")]
    pub schedule: Option<Schedule>,
    /// The hours scheduled runs may work in: a scheduled run outside it does not start,
    /// one under way stops cleanly at its end (the files under way finish) and the next
    /// one goes on with what is left. `None`: any time.
    #[serde(deserialize_with = "de_window")]
    pub window: Option<Window>,
    /// The longest a policy run (scheduled or `coldtier migrate`) may work; then it stops
    /// as at the end of a window. `None` (or "0s"): no limit.
    #[serde(deserialize_with = "de_opt_duration")]
    pub max_duration: Option<Duration>,
    /// Verified copies a file needs before its data may be freed (stubbed, released):
    /// the primary's and, beyond 1, those of the first `[[replica]]` targets in config
    /// order, which a policy run then writes itself from the local file. 1: the primary's.
    pub copies: u32,
}

/// The default `policy.min_size`, 1 MiB. Tiering a small file frees little (its inode,
/// xattr and catalog row stay) while its recall costs a full store round trip and each
/// object costs requests and per-object overhead (S3 archive classes bill at least 40 KiB
/// of metadata per object, the IA classes at least 128 KiB per object). On typical shares
/// files under 1 MiB are most of the files and a few per cent of the bytes: skipping them
/// keeps object counts and recall latency down for almost the same space freed.
pub const DEFAULT_MIN_SIZE: u64 = 1 << 20;

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            include: Patterns::default(),
            exclude: Patterns::default(),
            atime_older_than: Duration::from_secs(60 * 86400),
            min_size: DEFAULT_MIN_SIZE,
            max_size: None,
            mode: MigrateMode::DryRun,
            max_files: None,
            max_bytes: None,
            verify: Verify::Checksum,
            schedule: Some(Schedule::parse(DEFAULT_SCHEDULE).expect("valid default schedule")),
            window: None,
            max_duration: None,
            copies: 1,
        }
    }
}

/// The default `policy.schedule`: every night at 03:00 UTC.
pub const DEFAULT_SCHEDULE: &str = "0 3 * * *";

/// `policy.mode`: what a policy run does with its candidates.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum MigrateMode {
    /// Report what a `stub` run would do; change nothing (the default: nothing moves until
    /// the operator says so).
    #[default]
    DryRun,
    /// Copy to the store and verify (resident -> premigrated); free nothing.
    CopyOnly,
    /// Copy, verify, and free local data (-> stub).
    Stub,
}

impl MigrateMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrateMode::DryRun => "dry-run",
            MigrateMode::CopyOnly => "copy-only",
            MigrateMode::Stub => "stub",
        }
    }
}

/// `policy.verify`: how a copy is proven before the file counts as premigrated.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Verify {
    /// The store's checksum of what it received matches ours of what we read.
    #[default]
    Checksum,
    /// Also read the object back and compare checksums (twice the traffic).
    Readback,
}

impl Verify {
    pub fn as_str(self) -> &'static str {
        match self {
            Verify::Checksum => "checksum",
            Verify::Readback => "readback",
        }
    }
}

/// `[recall]`: bringing stubs back, and what to do about archived objects.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecallConfig {
    pub on_archived: OnArchived,
    pub restore_tier: RestoreTier,
    /// How long the store keeps a restored copy readable, in days.
    pub restore_days: u32,
    /// With `on_archived = "wait"`: how long an open blocks for a restore.
    #[serde(deserialize_with = "de_duration")]
    pub wait_timeout: Duration,
    /// How often a pending restore is checked (HEAD).
    #[serde(deserialize_with = "de_duration")]
    pub poll_interval: Duration,
    /// How long an open waits for a stub's data before it fails with `EAGAIN` while the
    /// recall goes on (an NFS server then tells its client to retry, NFS4ERR_DELAY; SMB
    /// and NFS clients give up on a request that takes a minute or more). "0": no limit.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// `[[recall.rules]]`: who may recall what (`tier::rules`), first match wins.
    pub rules: Vec<super::rules::RecallRule>,
    /// The shipped rules after the admin's (indexers denied, virus scanners streamed).
    pub default_rules: bool,
    /// Budgets (none: no limit), for recalls started by reads: at once, and per minute per
    /// uid and in all (count and bytes). Over a budget a read waits (up to `timeout`) or
    /// gets EAGAIN at once (`over_budget`).
    pub max_concurrent: Option<u64>,
    pub per_uid_per_minute: Option<u64>,
    #[serde(deserialize_with = "de_opt_size")]
    pub per_uid_bytes_per_minute: Option<u64>,
    pub per_minute: Option<u64>,
    #[serde(deserialize_with = "de_opt_size")]
    pub bytes_per_minute: Option<u64>,
    pub over_budget: OverBudget,
}

/// `recall.over_budget`: what a read that would start a recall over a budget gets.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OverBudget {
    /// It waits until the budget allows it, up to `recall.timeout`, then EAGAIN.
    #[default]
    Wait,
    /// EAGAIN at once.
    Eagain,
}

impl Default for RecallConfig {
    fn default() -> Self {
        RecallConfig {
            on_archived: OnArchived::Fail,
            restore_tier: RestoreTier::Standard,
            restore_days: 3,
            wait_timeout: Duration::from_secs(300),
            poll_interval: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
            rules: Vec::new(),
            default_rules: true,
            max_concurrent: None,
            per_uid_per_minute: None,
            per_uid_bytes_per_minute: None,
            per_minute: None,
            bytes_per_minute: None,
            over_budget: OverBudget::Wait,
        }
    }
}

/// `recall.on_archived`: an open of a stub whose object is archived and not restored.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum OnArchived {
    /// Block the open until the restore is done and the data recalled, up to
    /// `recall.wait_timeout`.
    Wait,
    /// Fail the open at once (the errno is in docs/semantics.md); the restore and recall
    /// go on in the background. The default: SMB and NFS clients give up on a blocked
    /// open within a minute or so anyway, and archive restores take minutes to hours.
    #[default]
    Fail,
}

impl OnArchived {
    pub fn as_str(self) -> &'static str {
        match self {
            OnArchived::Wait => "wait",
            OnArchived::Fail => "fail",
        }
    }
}

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn windows_parse_and_say_how_long_they_stay_open() {
        let night = Window::parse("22:00-06:00").unwrap();
        assert_eq!(night.to_string(), "22:00-06:00");
        let at = |h: u64, m: u64, s: u64| 19_000 * 86400 + h * 3600 + m * 60 + s;
        assert_eq!(
            night.remaining(at(23, 0, 0)),
            Some(Duration::from_secs(7 * 3600))
        );
        assert_eq!(
            night.remaining(at(5, 59, 30)),
            Some(Duration::from_secs(30))
        );
        assert_eq!(night.remaining(at(6, 0, 0)), None);
        assert_eq!(night.remaining(at(12, 0, 0)), None);
        assert_eq!(
            night.remaining(at(22, 0, 0)),
            Some(Duration::from_secs(8 * 3600))
        );
        let day = Window::parse(" 09:30 - 17:00 ").unwrap();
        assert_eq!(day.remaining(at(9, 29, 59)), None);
        assert_eq!(
            day.remaining(at(16, 0, 10)),
            Some(Duration::from_secs(3600 - 10))
        );
        assert!(Window::parse("00:00-24:00")
            .unwrap_err()
            .contains("whole day"));
        for bad in [
            "",
            "22-06",
            "25:00-01:00",
            "10:60-11:00",
            "10:00-10:00",
            "10:00",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_window_or_limit_names_its_key() {
        let err = |text: &str| {
            crate::config::Config::parse(text, "t")
                .unwrap_err()
                .to_string()
        };
        let e = err("[policy]\nwindow = \"22:00\"\n");
        assert!(e.contains("window") && e.contains("22:00"), "{e}");
        let e = err("[limits]\nupload_bwlimit = \"fast\"\n");
        assert!(e.contains("upload_bwlimit"), "{e}");
        let e = err("[limits]\nbwlimit = 1\n");
        assert!(e.contains("bwlimit"), "{e}");
    }
}
