//! Who may recall: `[[recall.rules]]`, matched in order against the reader of a stub (its
//! program name, uid, gid) and the file's path; the first rule that matches decides, then
//! the shipped defaults (unless `recall.default_rules = false`), else `recall`.
//!
//! * `recall`: the read brings the file back (streamed: docs/semantics.md).
//! * `stream`: the read gets the bytes from the store and the file stays a stub (its space
//!   stays free): for backup tools, scanners and indexers that read a file once.
//! * `deny`: the read fails with `EACCES`; nothing is fetched.
//! * `defer`: the read fails with `EAGAIN` now; the file is queued and recalled in the
//!   background, one at a time, and reads it afterwards.

use std::path::Path;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::{Deserialize, Deserializer};

use super::model::policy::Patterns;

/// What a rule does with a read of a stub.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum RecallAction {
    Recall,
    Stream,
    Deny,
    Defer,
}

impl RecallAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RecallAction::Recall => "recall",
            RecallAction::Stream => "stream",
            RecallAction::Deny => "deny",
            RecallAction::Defer => "defer",
        }
    }
}

/// Globs on a program name (the kernel's `comm`: at most 15 bytes, so a longer name is
/// matched by its first 15). Compares as its source patterns.
#[derive(Clone, Default)]
pub struct Programs {
    sources: Vec<String>,
    set: GlobSet,
}

impl Programs {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Programs, String> {
        let mut b = GlobSetBuilder::new();
        let mut sources = Vec::new();
        for p in patterns {
            let p = p.as_ref();
            if p.is_empty() || p.contains('/') {
                return Err(format!(
                    "program `{p}`: a program name (no `/`), globs allowed"
                ));
            }
            // comm is the first 15 bytes of the name: match a longer pattern by those.
            let cut: String = match p.char_indices().nth(15) {
                Some((i, _)) if !p.contains(['*', '?', '[']) => p[..i].to_string(),
                _ => p.to_string(),
            };
            b.add(Glob::new(&cut).map_err(|e| format!("program `{p}`: {}", e.kind()))?);
            sources.push(p.to_string());
        }
        Ok(Programs {
            sources,
            set: b.build().map_err(|e| e.to_string())?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    pub fn is_match(&self, program: &str) -> bool {
        self.set.is_match(program)
    }
}

impl PartialEq for Programs {
    fn eq(&self, o: &Self) -> bool {
        self.sources == o.sources
    }
}

impl std::fmt::Debug for Programs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.sources.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Programs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        Programs::new(&v).map_err(serde::de::Error::custom)
    }
}

/// One `[[recall.rules]]` entry: every condition given must hold.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecallRule {
    #[serde(default)]
    pub program: Programs,
    #[serde(default)]
    pub uid: Vec<u32>,
    #[serde(default)]
    pub gid: Vec<u32>,
    /// Paths relative to the mount's root, as `policy.include` takes them.
    #[serde(default)]
    pub path: Patterns,
    pub action: RecallAction,
}

/// Who reads: from the FUSE request and /proc.
#[derive(Debug, Clone, Default)]
pub struct Reader {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    /// The process name (`comm`), "" when the process is gone.
    pub program: String,
}

impl Reader {
    pub fn of(uid: u32, gid: u32, pid: u32) -> Reader {
        let program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|s| s.trim_end_matches('\n').to_string())
            .unwrap_or_default();
        Reader {
            uid,
            gid,
            pid,
            program,
        }
    }
}

impl RecallRule {
    pub fn matches(&self, who: &Reader, rel: &Path) -> bool {
        (self.program.is_empty() || self.program.is_match(&who.program))
            && (self.uid.is_empty() || self.uid.contains(&who.uid))
            && (self.gid.is_empty() || self.gid.contains(&who.gid))
            && (self.path.is_empty() || self.path.is_match(rel))
    }
}

/// The rules shipped (after the admin's, unless `recall.default_rules = false`): file
/// indexers and locate databases never recall (they would bring back every file of the
/// share), virus scanners read without recalling.
pub fn default_rules() -> Vec<RecallRule> {
    let rule = |programs: &[&str], action| RecallRule {
        program: Programs::new(programs).expect("valid default globs"),
        uid: Vec::new(),
        gid: Vec::new(),
        path: Patterns::default(),
        action,
    };
    vec![
        rule(
            &[
                "updatedb",
                "updatedb.*",
                "mlocate",
                "plocate*",
                "locate",
                "tracker-*",
                "tracker3*",
                "localsearch*",
                "baloo_file*",
                "baloo*",
                "zeitgeist*",
                "recollindex",
            ],
            RecallAction::Deny,
        ),
        rule(
            &["clamd", "clamscan", "clamdscan", "clamonacc", "freshclam"],
            RecallAction::Stream,
        ),
    ]
}

/// The action for `who` reading `rel`, and the rule that chose it ("default" when none).
pub fn decide(
    rules: &[RecallRule],
    defaults: bool,
    who: &Reader,
    rel: &Path,
) -> (RecallAction, String) {
    if let Some((i, r)) = rules.iter().enumerate().find(|(_, r)| r.matches(who, rel)) {
        return (r.action, format!("recall.rules #{}", i + 1));
    }
    if defaults {
        if let Some(r) = default_rules().iter().find(|r| r.matches(who, rel)) {
            return (r.action, "the shipped rules".into());
        }
    }
    (RecallAction::Recall, "default".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(program: &str, uid: u32) -> Reader {
        Reader {
            uid,
            gid: uid,
            pid: 0,
            program: program.into(),
        }
    }

    #[test]
    fn first_matching_rule_then_defaults_then_recall() {
        let rules: Vec<RecallRule> = toml::from_str::<toml::Table>(
            r#"
            [[r]]
            program = ["rsync"]
            path = ["archive"]
            action = "stream"
            [[r]]
            uid = [1000]
            action = "defer"
            [[r]]
            program = ["clamscan"]
            action = "recall"
            "#,
        )
        .unwrap()["r"]
            .clone()
            .try_into()
            .unwrap();
        let p = Path::new("archive/x.tar");
        assert_eq!(
            decide(&rules, true, &who("rsync", 0), p).0,
            RecallAction::Stream
        );
        assert_eq!(
            decide(&rules, true, &who("rsync", 0), Path::new("other")).0,
            RecallAction::Recall
        );
        assert_eq!(
            decide(&rules, true, &who("cat", 1000), p).0,
            RecallAction::Defer
        );
        // The admin's rule wins over the shipped one; without it the shipped one holds.
        assert_eq!(
            decide(&rules, true, &who("clamscan", 0), p).0,
            RecallAction::Recall
        );
        assert_eq!(
            decide(&[], true, &who("clamscan", 0), p).0,
            RecallAction::Stream
        );
        assert_eq!(
            decide(&[], true, &who("updatedb", 0), p).0,
            RecallAction::Deny
        );
        // comm is cut at 15 bytes: "tracker-miner-fs-3" shows as "tracker-miner-f".
        assert_eq!(
            decide(&[], true, &who("tracker-miner-f", 0), p).0,
            RecallAction::Deny
        );
        assert_eq!(
            decide(&[], false, &who("updatedb", 0), p).0,
            RecallAction::Recall
        );
        assert_eq!(
            decide(&[], true, &who("vim", 0), p),
            (RecallAction::Recall, "default".into())
        );
        assert!(Programs::new(&["/usr/bin/rsync"]).is_err());
        let long = Programs::new(&["baloo_file_extractor"]).unwrap();
        assert!(long.is_match("baloo_file_extr"));
    }
}
