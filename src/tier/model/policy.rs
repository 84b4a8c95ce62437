//! The migration policy, pure: which files are cold enough to tier ([`evaluate`]), and
//! which of those one run takes within its limits ([`select`]). Include/exclude patterns
//! ([`Patterns`]) live here too, compiled once when the config is read.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Deserializer};

use crate::catalog::FileState;
use crate::tier::config::{MigrateMode, PolicyConfig};

/// A list of glob patterns matched against paths relative to SOURCE, with .gitignore-like
/// rules that are easy to predict:
/// * `*` and `?` never match `/`; `**` matches any number of directories; `[abc]`, `{a,b}`
///   and `\` escapes work as in globset; matching is case-sensitive.
/// * A pattern with no `/` matches a name at any depth: `*.iso` is `**/*.iso`.
/// * A pattern with a `/` is anchored at SOURCE: `projects/*/raw` (a leading `/` just
///   anchors explicitly).
/// * A pattern that matches a directory also matches everything under it: `scratch` or
///   `builds/nightly` cover their whole trees. A trailing `/` means "only as a directory".
///
/// Compares and prints as its source patterns.
#[derive(Clone, Default)]
pub struct Patterns {
    sources: Vec<String>,
    /// For each glob in `set`, the index of the source pattern it came from.
    origin: Vec<usize>,
    set: GlobSet,
}

/// A pattern that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern #{} `{pattern}`: {message}", .index + 1)]
pub struct PatternError {
    /// 0-based position in the list.
    pub index: usize,
    pub pattern: String,
    pub message: String,
}

impl Patterns {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Patterns, PatternError> {
        let mut builder = GlobSetBuilder::new();
        let mut origin = Vec::new();
        let mut sources = Vec::new();
        for (index, p) in patterns.iter().enumerate() {
            let p = p.as_ref();
            let err = |message: String| PatternError {
                index,
                pattern: p.to_owned(),
                message,
            };
            let (anchored, body) = match p.strip_prefix('/') {
                Some(rest) => (true, rest),
                None => (false, p),
            };
            let (dir_only, body) = match body.strip_suffix('/') {
                Some(rest) => (true, rest),
                None => (false, body),
            };
            if body.is_empty() || body.starts_with('/') || body.ends_with('/') {
                return Err(err("matches nothing: give a name or a path".into()));
            }
            if body.contains('\0') {
                return Err(err("contains a NUL byte".into()));
            }
            let base = if anchored || body.contains('/') {
                body.to_owned()
            } else {
                format!("**/{body}")
            };
            let mut globs = vec![format!("{base}/**")];
            if !dir_only {
                globs.push(base);
            }
            for g in globs {
                let glob = GlobBuilder::new(&g)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .empty_alternates(true)
                    .build()
                    .map_err(|e| err(e.kind().to_string()))?;
                builder.add(glob);
                origin.push(index);
            }
            sources.push(p.to_owned());
        }
        let set = builder.build().map_err(|e| PatternError {
            index: 0,
            pattern: String::new(),
            message: e.to_string(),
        })?;
        Ok(Patterns {
            sources,
            origin,
            set,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The patterns as written.
    pub fn as_slice(&self) -> &[String] {
        &self.sources
    }

    pub fn is_match(&self, rel_path: &Path) -> bool {
        self.set.is_match(rel_path)
    }

    /// The first pattern (in the order written) that matches `rel_path`.
    pub fn first_match(&self, rel_path: &Path) -> Option<&str> {
        if !self.set.is_match(rel_path) {
            return None;
        }
        self.set
            .matches(rel_path)
            .into_iter()
            .map(|g| self.origin[g])
            .min()
            .map(|i| self.sources[i].as_str())
    }
}

impl PartialEq for Patterns {
    fn eq(&self, other: &Self) -> bool {
        self.sources == other.sources
    }
}

impl fmt::Debug for Patterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.sources).finish()
    }
}

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        Patterns::new(&v).map_err(serde::de::Error::custom)
    }
}

/// What the policy needs to know about one file (the scanner fills it from fstatat and
/// the catalog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFacts {
    /// Relative to SOURCE, no leading `/` (not necessarily UTF-8).
    pub rel_path: PathBuf,
    pub size: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub state: FileState,
    pub pinned: bool,
    pub is_regular: bool,
    pub nlink: u64,
}

impl FileFacts {
    /// When the file was last used: the later of atime and mtime. A write is a use, and
    /// on `noatime` mounts (or with relatime's 24 h granularity) atime alone can be older
    /// than the last write. ctime is not used: chmod, chown, rename and our own xattr
    /// writes change it without anyone using the data.
    pub fn last_use(&self) -> SystemTime {
        self.atime.max(self.mtime)
    }
}

/// What a run would do with a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plan {
    /// Copy it (copy-only mode): resident -> premigrated.
    Copy,
    /// Copy, verify, then free the data: resident -> premigrated -> stub.
    CopyThenStub,
    /// It is premigrated already: only free the data (after re-checking it is unchanged).
    Stub,
}

/// Why a file is a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CandidateReason {
    /// Unused for `idle` (>= `policy.atime_older_than`) since `last_use`.
    Cold {
        last_use: SystemTime,
        idle: Duration,
    },
}

impl fmt::Display for CandidateReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CandidateReason::Cold { idle, .. } => {
                write!(f, "unused for {}", human_duration(*idle))
            }
        }
    }
}

/// Why a file is not a candidate. Checked in this order, so the answer to "why is this
/// file not tiered?" is stable: what the file is, then what the operator said about it,
/// then its size, then its age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A directory, symlink, device, fifo or socket: only regular files are tiered.
    NotRegular,
    /// Its data is already in the store (or on the way back); carries the state.
    AlreadyTiered(FileState),
    /// Pinned files are never released (or copied by policy: they will not be stubbed).
    Pinned,
    /// More than one name: not tiered in v1 (see [`evaluate`]).
    HardLinked {
        nlink: u64,
    },
    /// Matched this `policy.exclude` pattern.
    Excluded(String),
    /// `policy.include` is set and no pattern matched.
    NotIncluded,
    /// Size 0: stubbing frees nothing.
    Empty,
    TooSmall {
        size: u64,
        min: u64,
    },
    TooLarge {
        size: u64,
        max: u64,
    },
    /// Used more recently than `policy.atime_older_than` ago (the later of atime and mtime).
    TooRecent {
        last_use: SystemTime,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotRegular => f.write_str("not a regular file"),
            SkipReason::AlreadyTiered(s) => write!(f, "already tiered ({s})"),
            SkipReason::Pinned => f.write_str("pinned"),
            SkipReason::HardLinked { nlink } => {
                write!(f, "has {nlink} hard links (not tiered)")
            }
            SkipReason::Excluded(p) => write!(f, "excluded by `{p}`"),
            SkipReason::NotIncluded => f.write_str("matches no include pattern"),
            SkipReason::Empty => f.write_str("empty"),
            SkipReason::TooSmall { size, min } => {
                write!(f, "{size} bytes, smaller than min_size {min}")
            }
            SkipReason::TooLarge { size, max } => {
                write!(f, "{size} bytes, larger than max_size {max}")
            }
            SkipReason::TooRecent { .. } => f.write_str("used recently"),
        }
    }
}

/// The policy's verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Candidate { reason: CandidateReason, plan: Plan },
    Skip(SkipReason),
}

/// Decides whether `facts` is a candidate under `policy` at `now`.
///
/// Which states are work depends on the mode: `copy-only` copies resident files;
/// `stub` (and `dry-run`, which reports what a `stub` run would do) also frees the data of
/// premigrated ones. Stubs, recalls and pending restores are already tiered.
///
/// Hard links (nlink > 1) are skipped in v1. The catalog's identity is one file id per
/// path, so two names of one inode would become two file ids and two objects; stubbing
/// one name frees the data the other name's row says is local; and unlinking one name
/// would record a DELETED whose retention clock lets `gc` remove an object the other name
/// still needs. Tiering them correctly needs inode-keyed identity: later work.
///
/// A time in the future (clock skew, a restored backup) counts as "just used".
pub fn evaluate(policy: &PolicyConfig, facts: &FileFacts, now: SystemTime) -> Decision {
    if !facts.is_regular {
        return Decision::Skip(SkipReason::NotRegular);
    }
    let plan = match (facts.state, policy.mode) {
        (FileState::Resident, MigrateMode::CopyOnly) => Plan::Copy,
        (FileState::Resident, MigrateMode::Stub | MigrateMode::DryRun) => Plan::CopyThenStub,
        (FileState::Premigrated, MigrateMode::Stub | MigrateMode::DryRun) => Plan::Stub,
        (state, _) => return Decision::Skip(SkipReason::AlreadyTiered(state)),
    };
    if facts.pinned {
        return Decision::Skip(SkipReason::Pinned);
    }
    if facts.nlink > 1 {
        return Decision::Skip(SkipReason::HardLinked { nlink: facts.nlink });
    }
    if let Some(p) = policy.exclude.first_match(&facts.rel_path) {
        return Decision::Skip(SkipReason::Excluded(p.to_owned()));
    }
    if !policy.include.is_empty() && !policy.include.is_match(&facts.rel_path) {
        return Decision::Skip(SkipReason::NotIncluded);
    }
    if facts.size == 0 {
        return Decision::Skip(SkipReason::Empty);
    }
    if facts.size < policy.min_size {
        return Decision::Skip(SkipReason::TooSmall {
            size: facts.size,
            min: policy.min_size,
        });
    }
    if let Some(max) = policy.max_size {
        if facts.size > max {
            return Decision::Skip(SkipReason::TooLarge {
                size: facts.size,
                max,
            });
        }
    }
    let last_use = facts.last_use();
    let idle = now.duration_since(last_use).unwrap_or(Duration::ZERO);
    if idle < policy.atime_older_than {
        return Decision::Skip(SkipReason::TooRecent { last_use });
    }
    Decision::Candidate {
        reason: CandidateReason::Cold { last_use, idle },
        plan,
    }
}

/// Anything [`select`] can order: file facts, or facts with something attached.
pub trait Selectable {
    fn facts(&self) -> &FileFacts;
}

impl Selectable for FileFacts {
    fn facts(&self) -> &FileFacts {
        self
    }
}

impl<T> Selectable for (FileFacts, T) {
    fn facts(&self) -> &FileFacts {
        &self.0
    }
}

/// What one run takes, and what it leaves for the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection<T> {
    /// In the order to process them: least recently used first.
    pub selected: Vec<T>,
    /// Over the limits this time, in the same order.
    pub deferred: Vec<T>,
    /// Sum of the selected files' sizes.
    pub bytes: u64,
}

/// Applies a run's limits (`policy.max_files`, `policy.max_bytes`; `None`: no limit)
/// deterministically: candidates are ordered by last use, oldest first (ties by path),
/// and taken while they fit. A file too large for the bytes left is deferred and the next
/// ones are still tried, so one huge file does not stop a run; one larger than `max_bytes`
/// itself is never selected (raise the limit, or `coldtier release` it by hand).
pub fn select<T: Selectable>(
    mut candidates: Vec<T>,
    max_files: Option<u64>,
    max_bytes: Option<u64>,
) -> Selection<T> {
    candidates.sort_by(|a, b| order(a.facts(), b.facts()));
    let mut selected = Vec::new();
    let mut deferred = Vec::new();
    let mut bytes = 0u64;
    for c in candidates {
        let size = c.facts().size;
        let files_full = max_files.is_some_and(|m| selected.len() as u64 >= m);
        let fits = max_bytes.is_none_or(|m| bytes.checked_add(size).is_some_and(|b| b <= m));
        if files_full || !fits {
            deferred.push(c);
        } else {
            bytes += size;
            selected.push(c);
        }
    }
    Selection {
        selected,
        deferred,
        bytes,
    }
}

fn order(a: &FileFacts, b: &FileFacts) -> Ordering {
    a.last_use()
        .cmp(&b.last_use())
        .then_with(|| a.rel_path.cmp(&b.rel_path))
}

/// "93d", "5h", "42s": the largest whole unit.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86400 => format!("{}d", s / 86400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    const DAY: u64 = 86400;
    const MIB: u64 = 1 << 20;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(20_000 * DAY)
    }

    fn days_ago(d: u64) -> SystemTime {
        now() - Duration::from_secs(d * DAY)
    }

    fn facts(path: &str) -> FileFacts {
        FileFacts {
            rel_path: path.into(),
            size: 10 * MIB,
            atime: days_ago(100),
            mtime: days_ago(200),
            ctime: days_ago(1),
            state: FileState::Resident,
            pinned: false,
            is_regular: true,
            nlink: 1,
        }
    }

    fn policy() -> PolicyConfig {
        PolicyConfig {
            mode: MigrateMode::Stub,
            ..PolicyConfig::default()
        }
    }

    fn pats(p: &[&str]) -> Patterns {
        Patterns::new(p).unwrap()
    }

    fn skip(policy: &PolicyConfig, f: &FileFacts) -> SkipReason {
        match evaluate(policy, f, now()) {
            Decision::Skip(r) => r,
            d => panic!("{f:?} is {d:?}"),
        }
    }

    #[test]
    fn a_cold_big_resident_file_is_a_candidate() {
        let f = facts("a/b.iso");
        assert_eq!(
            evaluate(&policy(), &f, now()),
            Decision::Candidate {
                reason: CandidateReason::Cold {
                    last_use: days_ago(100),
                    idle: Duration::from_secs(100 * DAY),
                },
                plan: Plan::CopyThenStub,
            }
        );
        let d = evaluate(&policy(), &f, now());
        let Decision::Candidate { reason, .. } = d else {
            unreachable!()
        };
        assert_eq!(reason.to_string(), "unused for 100d");
    }

    #[test]
    fn plans_by_state_and_mode() {
        use FileState as S;
        use MigrateMode as M;
        let cases = [
            (S::Resident, M::DryRun, Some(Plan::CopyThenStub)),
            (S::Resident, M::CopyOnly, Some(Plan::Copy)),
            (S::Resident, M::Stub, Some(Plan::CopyThenStub)),
            (S::Premigrated, M::DryRun, Some(Plan::Stub)),
            (S::Premigrated, M::CopyOnly, None),
            (S::Premigrated, M::Stub, Some(Plan::Stub)),
            (S::Stub, M::DryRun, None),
            (S::Stub, M::CopyOnly, None),
            (S::Stub, M::Stub, None),
            (S::Recalling, M::Stub, None),
            (S::RestorePending, M::Stub, None),
            (S::Recalling, M::CopyOnly, None),
            (S::RestorePending, M::DryRun, None),
        ];
        for (state, mode, want) in cases {
            let p = PolicyConfig {
                mode,
                ..PolicyConfig::default()
            };
            let f = FileFacts {
                state,
                ..facts("x")
            };
            let got = evaluate(&p, &f, now());
            match want {
                Some(plan) => assert!(
                    matches!(got, Decision::Candidate { plan: p, .. } if p == plan),
                    "{state} {mode:?}: {got:?}"
                ),
                None => assert_eq!(
                    got,
                    Decision::Skip(SkipReason::AlreadyTiered(state)),
                    "{state} {mode:?}"
                ),
            }
        }
    }

    #[test]
    fn each_skip_reason() {
        let p = PolicyConfig {
            exclude: pats(&["*.tmp", "scratch"]),
            include: pats(&["projects", "*.iso"]),
            max_size: Some(100 * MIB),
            ..policy()
        };
        let f = facts("projects/x.bin");
        assert!(matches!(
            evaluate(&p, &f, now()),
            Decision::Candidate { .. }
        ));
        let with = |g: &dyn Fn(&mut FileFacts)| {
            let mut f = f.clone();
            g(&mut f);
            skip(&p, &f)
        };
        assert_eq!(with(&|f| f.is_regular = false), SkipReason::NotRegular);
        assert_eq!(
            with(&|f| f.state = FileState::Stub),
            SkipReason::AlreadyTiered(FileState::Stub)
        );
        assert_eq!(with(&|f| f.pinned = true), SkipReason::Pinned);
        assert_eq!(with(&|f| f.nlink = 2), SkipReason::HardLinked { nlink: 2 });
        assert_eq!(
            with(&|f| f.rel_path = "projects/a.tmp".into()),
            SkipReason::Excluded("*.tmp".into())
        );
        assert_eq!(
            with(&|f| f.rel_path = "projects/scratch/a.bin".into()),
            SkipReason::Excluded("scratch".into())
        );
        assert_eq!(
            with(&|f| f.rel_path = "other/a.bin".into()),
            SkipReason::NotIncluded
        );
        assert_eq!(with(&|f| f.size = 0), SkipReason::Empty);
        assert_eq!(
            with(&|f| f.size = MIB - 1),
            SkipReason::TooSmall {
                size: MIB - 1,
                min: MIB
            }
        );
        assert_eq!(
            with(&|f| f.size = 100 * MIB + 1),
            SkipReason::TooLarge {
                size: 100 * MIB + 1,
                max: 100 * MIB
            }
        );
        assert_eq!(
            with(&|f| f.atime = days_ago(59)),
            SkipReason::TooRecent {
                last_use: days_ago(59)
            }
        );
        // mtime counts as a use too (noatime mounts).
        assert_eq!(
            with(&|f| f.mtime = days_ago(3)),
            SkipReason::TooRecent {
                last_use: days_ago(3)
            }
        );
        // ctime does not.
        assert!(matches!(
            evaluate(
                &p,
                &FileFacts {
                    ctime: now(),
                    ..f.clone()
                },
                now()
            ),
            Decision::Candidate { .. }
        ));
        // Boundaries are inclusive: exactly min_size, max_size and the age are fine.
        for g in [
            &(|f: &mut FileFacts| f.size = MIB) as &dyn Fn(&mut FileFacts),
            &|f| f.size = 100 * MIB,
            &|f| {
                f.atime = days_ago(60);
                f.mtime = days_ago(60)
            },
        ] {
            let mut f = f.clone();
            g(&mut f);
            assert!(
                matches!(evaluate(&p, &f, now()), Decision::Candidate { .. }),
                "{f:?}"
            );
        }
        // A time in the future is "just used".
        assert!(matches!(
            with(&|f| f.atime = now() + Duration::from_secs(DAY)),
            SkipReason::TooRecent { .. }
        ));
        for r in [
            SkipReason::NotRegular,
            SkipReason::Pinned,
            SkipReason::TooRecent { last_use: now() },
        ] {
            assert!(!r.to_string().is_empty());
        }
    }

    #[test]
    fn skip_reasons_come_in_a_fixed_order() {
        // Everything wrong at once: each fix reveals the next reason.
        let p = PolicyConfig {
            exclude: pats(&["*.tmp"]),
            include: pats(&["keep/**"]),
            max_size: Some(2),
            min_size: 1,
            ..policy()
        };
        let mut f = FileFacts {
            rel_path: "x.tmp".into(),
            size: 3,
            atime: now(),
            mtime: now(),
            ctime: now(),
            state: FileState::Stub,
            pinned: true,
            is_regular: false,
            nlink: 3,
        };
        let mut seen = vec![];
        type Fix = Box<dyn Fn(&mut FileFacts)>;
        let fixes: Vec<Fix> = vec![
            Box::new(|f| f.is_regular = true),
            Box::new(|f| f.state = FileState::Resident),
            Box::new(|f| f.pinned = false),
            Box::new(|f| f.nlink = 1),
            Box::new(|f| f.rel_path = "x.bin".into()),
            Box::new(|f| f.rel_path = "keep/x.bin".into()),
            Box::new(|f| f.size = 2),
            Box::new(|f| {
                f.atime = days_ago(61);
                f.mtime = days_ago(61)
            }),
        ];
        for fix in fixes {
            seen.push(skip(&p, &f));
            fix(&mut f);
        }
        assert!(matches!(
            evaluate(&p, &f, now()),
            Decision::Candidate { .. }
        ));
        assert_eq!(
            seen,
            [
                SkipReason::NotRegular,
                SkipReason::AlreadyTiered(FileState::Stub),
                SkipReason::Pinned,
                SkipReason::HardLinked { nlink: 3 },
                SkipReason::Excluded("*.tmp".into()),
                SkipReason::NotIncluded,
                SkipReason::TooLarge { size: 3, max: 2 },
                SkipReason::TooRecent { last_use: now() },
            ]
        );
    }

    #[test]
    fn pattern_semantics() {
        let cases: &[(&str, &str, bool)] = &[
            // No slash: any depth, and everything under a directory so named.
            ("*.iso", "a.iso", true),
            ("*.iso", "x/y/a.iso", true),
            ("*.iso", "a.iso.part", false),
            ("*.iso", "dir.iso/inner.txt", true),
            ("scratch", "scratch", true),
            ("scratch", "a/scratch/b/c", true),
            ("scratch", "a/scratchy", false),
            ("scratch/", "a/scratch/b", true),
            ("scratch/", "a/scratch", false),
            // With a slash: anchored at SOURCE.
            ("projects/*/raw", "projects/p1/raw", true),
            ("projects/*/raw", "projects/p1/raw/f.dat", true),
            ("projects/*/raw", "projects/p1/x/raw", false),
            ("projects/*/raw", "old/projects/p1/raw", false),
            ("/top.txt", "top.txt", true),
            ("/top.txt", "a/top.txt", false),
            // `*` stays within a directory; `**` crosses them.
            ("a/*.txt", "a/b/c.txt", false),
            ("a/**/*.txt", "a/b/c.txt", true),
            ("a/**/*.txt", "a/c.txt", true),
            ("**/cache/**", "x/cache/y", true),
            ("**", "anything/at/all", true),
            ("?.txt", "a.txt", true),
            ("?.txt", "ab.txt", false),
            ("[ab].txt", "b.txt", true),
            ("*.{iso,img}", "d/x.img", true),
            ("*.ISO", "x.iso", false),
            ("\\*.txt", "*.txt", true),
            ("\\*.txt", "a.txt", false),
        ];
        for (pat, path, want) in cases {
            let p = pats(&[pat]);
            assert_eq!(p.is_match(Path::new(path)), *want, "`{pat}` vs `{path}`");
        }
        // Non-UTF-8 names still match by their bytes.
        use std::os::unix::ffi::OsStrExt;
        let odd = Path::new(std::ffi::OsStr::from_bytes(b"d/\xff.iso"));
        assert!(pats(&["*.iso"]).is_match(odd));
    }

    #[test]
    fn first_match_is_the_first_pattern_written() {
        let p = pats(&["b/**", "*.tmp", "b"]);
        assert_eq!(p.first_match(Path::new("b/x.tmp")), Some("b/**"));
        assert_eq!(p.first_match(Path::new("c/x.tmp")), Some("*.tmp"));
        assert_eq!(p.first_match(Path::new("c/x")), None);
        assert_eq!(p.as_slice(), ["b/**", "*.tmp", "b"]);
        assert_eq!(format!("{p:?}"), r#"["b/**", "*.tmp", "b"]"#);
        assert!(Patterns::default().is_empty());
        assert!(!Patterns::default().is_match(Path::new("a")));
    }

    #[test]
    fn bad_patterns_are_named() {
        for (list, index) in [
            (vec!["ok", "a/[b"], 1),
            (vec![""], 0),
            (vec!["/"], 0),
            (vec!["ok", "ok2", "a//"], 2),
            (vec!["a{b"], 0),
            (vec!["a\0b"], 0),
        ] {
            let e = Patterns::new(&list).unwrap_err();
            assert_eq!(e.index, index, "{list:?}: {e}");
            assert_eq!(e.pattern, list[index]);
            assert!(
                e.to_string()
                    .starts_with(&format!("pattern #{} `{}`", index + 1, list[index])),
                "{e}"
            );
        }
    }

    fn sized(path: &str, size: u64, age_days: u64) -> FileFacts {
        FileFacts {
            size,
            atime: days_ago(age_days),
            mtime: days_ago(age_days),
            ..facts(path)
        }
    }

    fn paths<T: Selectable>(v: &[T]) -> Vec<&str> {
        v.iter()
            .map(|f| f.facts().rel_path.to_str().unwrap())
            .collect()
    }

    #[test]
    fn select_takes_oldest_first_within_limits() {
        let c = vec![
            sized("young", 10, 61),
            sized("old", 10, 300),
            sized("mid-b", 10, 100),
            sized("mid-a", 10, 100),
        ];
        let s = select(c.clone(), None, None);
        assert_eq!(paths(&s.selected), ["old", "mid-a", "mid-b", "young"]);
        assert!(s.deferred.is_empty());
        assert_eq!(s.bytes, 40);

        let s = select(c.clone(), Some(2), None);
        assert_eq!(paths(&s.selected), ["old", "mid-a"]);
        assert_eq!(paths(&s.deferred), ["mid-b", "young"]);
        assert_eq!(s.bytes, 20);

        let s = select(c.clone(), Some(0), None);
        assert!(s.selected.is_empty());
        assert_eq!(s.deferred.len(), 4);

        let s = select(c, None, Some(25));
        assert_eq!(paths(&s.selected), ["old", "mid-a"]);
        assert_eq!(s.bytes, 20);
    }

    #[test]
    fn select_skips_what_does_not_fit_and_goes_on() {
        let c = vec![
            sized("huge", 1000, 400),
            sized("a", 60, 300),
            sized("b", 50, 200),
            sized("c", 40, 100),
        ];
        let s = select(c, Some(10), Some(100));
        assert_eq!(paths(&s.selected), ["a", "c"]);
        assert_eq!(paths(&s.deferred), ["huge", "b"]);
        assert_eq!(s.bytes, 100);
        // Sizes near u64::MAX do not overflow.
        let s = select(
            vec![sized("x", u64::MAX, 2), sized("y", u64::MAX, 1)],
            None,
            Some(u64::MAX),
        );
        assert_eq!(paths(&s.selected), ["x"]);
        assert_eq!(paths(&s.deferred), ["y"]);
    }

    #[test]
    fn select_is_deterministic_whatever_the_input_order() {
        let mut c: Vec<(FileFacts, u32)> = (0..50)
            .map(|i| (sized(&format!("f{i:02}"), 10 + i, 61 + (i % 7)), i as u32))
            .collect();
        let first = select(c.clone(), Some(20), Some(400));
        c.reverse();
        let second = select(c.clone(), Some(20), Some(400));
        assert_eq!(first, second);
        c.sort_by_key(|(f, _)| f.size % 13);
        assert_eq!(select(c, Some(20), Some(400)), first);
        assert!(first.bytes <= 400 && first.selected.len() <= 20);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(Duration::from_secs(5)), "5s");
        assert_eq!(human_duration(Duration::from_secs(3 * 60 + 5)), "3m");
        assert_eq!(human_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(human_duration(Duration::from_secs(93 * DAY + 5)), "93d");
    }
}
