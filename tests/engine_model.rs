//! The engine against a reference model (as mountpoint-s3's reftests): proptest drives the
//! in-process engine (tests/common/engine.rs) and a plain map of names to contents with
//! the same random operations (write, partial write, rename, unlink, migrate copy-only and
//! stub, read, pin, unpin, release, gc, restart, and a crash at a failpoint of migrate or
//! recall followed by a restart), and checks after every step that they agree: the same
//! names, sizes and pins; every content read back equal; a pinned file never freed; the
//! state the model predicts where it can. At the end of each case: every file reads back
//! equal, verify finds nothing, and after gc the bucket holds exactly what the files'
//! records name.
//!
//! `COLDTIER_MODEL_CASES` sets the number of cases (default 160, of 1 to 47 steps each:
//! about 3,900 steps per run, 10 s here; 2,000 cases, about 48,000 steps, take two
//! minutes).

#[path = "common/engine.rs"]
mod engine;

use std::collections::BTreeMap;
use std::sync::Arc;

use coldtier::base::failpoint::{self, FailAction};
use coldtier::catalog::FileState;
use coldtier::store::MemoryStore;
use coldtier::tier::config::MigrateMode;
use engine::{data, eager_settings, Dirs, Engine};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["f0", "f1", "f2", "f3"];

const MIGRATE_POINTS: [&str; 5] = [
    "migrate-after-intent",
    "migrate-after-put",
    "migrate-after-verify",
    "migrate-after-stub-xattr",
    "migrate-after-truncate",
];
const RECALL_POINTS: [&str; 3] = [
    "recall-after-truncate",
    "recall-after-data",
    "recall-after-premig-xattr",
];

#[derive(Debug, Clone)]
enum Op {
    Write {
        f: usize,
        seed: u64,
        len: usize,
    },
    WriteAt {
        f: usize,
        off: usize,
        seed: u64,
        len: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    Unlink {
        f: usize,
    },
    Migrate {
        stub: bool,
    },
    Read {
        f: usize,
    },
    Pin {
        f: usize,
        on: bool,
    },
    Release {
        f: usize,
    },
    Gc,
    Restart,
    CrashMigrate {
        point: usize,
    },
    CrashRecall {
        f: usize,
        point: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0..NAMES.len();
    prop_oneof![
        4 => (f.clone(), any::<u64>(), 1usize..200_000).prop_map(|(f, seed, len)| Op::Write { f, seed, len }),
        2 => (f.clone(), 0usize..100_000, any::<u64>(), 1usize..5_000)
            .prop_map(|(f, off, seed, len)| Op::WriteAt { f, off, seed, len }),
        1 => (f.clone(), f.clone()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => f.clone().prop_map(|f| Op::Unlink { f }),
        3 => any::<bool>().prop_map(|stub| Op::Migrate { stub }),
        3 => f.clone().prop_map(|f| Op::Read { f }),
        1 => (f.clone(), any::<bool>()).prop_map(|(f, on)| Op::Pin { f, on }),
        1 => f.clone().prop_map(|f| Op::Release { f }),
        1 => Just(Op::Gc),
        1 => Just(Op::Restart),
        1 => (0..MIGRATE_POINTS.len()).prop_map(|point| Op::CrashMigrate { point }),
        1 => (f, 0..RECALL_POINTS.len()).prop_map(|(f, point)| Op::CrashRecall { f, point }),
    ]
}

/// What the model knows of one file.
#[derive(Debug, Clone)]
struct Model {
    content: Vec<u8>,
    pinned: bool,
    /// The state it must be in; `None` when the model cannot tell (after a crash).
    state: Option<FileState>,
}

struct World {
    dirs: Dirs,
    store: Arc<MemoryStore>,
    e: Option<Engine>,
    files: BTreeMap<&'static str, Model>,
}

impl World {
    fn e(&self) -> &Engine {
        self.e.as_ref().unwrap()
    }

    fn restart(&mut self) {
        self.e.take().unwrap().stop();
        self.e = Some(Engine::start(
            &self.dirs,
            self.store.clone(),
            eager_settings(),
        ));
    }

    /// Reads `name` and checks it against the model; a stub becomes premigrated.
    fn read(&mut self, name: &'static str) -> Result<(), TestCaseError> {
        let got = self.e().read(name);
        let m = self.files.get_mut(name).unwrap();
        prop_assert_eq!(
            got.as_ref().ok(),
            Some(&m.content),
            "{} read back different",
            name
        );
        if m.state == Some(FileState::Stub) {
            m.state = Some(FileState::Premigrated);
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Write { f, seed, len } => {
                let name = NAMES[f];
                let body = data(seed, len);
                self.e().write(name, &body).unwrap();
                let pinned = self.files.get(name).is_some_and(|m| m.pinned);
                self.files.insert(
                    name,
                    Model {
                        content: body,
                        pinned,
                        state: Some(FileState::Resident),
                    },
                );
            }
            Op::WriteAt { f, off, seed, len } => {
                let name = NAMES[f];
                let Some(m) = self.files.get(name) else {
                    return Ok(());
                };
                let off = off.min(m.content.len());
                let before = m.content.clone();
                let piece = data(seed, len);
                self.e().write_at(name, off as u64, &piece).unwrap();
                let m = self.files.get_mut(name).unwrap();
                let end = off + piece.len();
                if m.content.len() < end {
                    m.content.resize(end, 0);
                }
                m.content[off..end].copy_from_slice(&piece);
                // A stub or a premigrated file of the same size has its copy compared with
                // the content in the background (`check` waits for it): resident, unless the
                // bytes are the same (premigrated); a size change makes it resident at once.
                m.state = if m.content == before {
                    m.state.map(|s| {
                        if s == FileState::Stub {
                            FileState::Premigrated
                        } else {
                            s
                        }
                    })
                } else {
                    Some(FileState::Resident)
                };
            }
            Op::Rename { from, to } => {
                let (a, b) = (NAMES[from], NAMES[to]);
                if a == b || !self.files.contains_key(a) {
                    return Ok(());
                }
                self.e().rename(a, b).unwrap();
                let m = self.files.remove(a).unwrap();
                self.files.insert(b, m);
            }
            Op::Unlink { f } => {
                let name = NAMES[f];
                if self.files.remove(name).is_some() {
                    self.e().unlink(name).unwrap();
                }
            }
            Op::Migrate { stub } => {
                let mode = if stub {
                    MigrateMode::Stub
                } else {
                    MigrateMode::CopyOnly
                };
                let s = self.e().migrate(mode);
                prop_assert_eq!(s.failed, 0, "{:?}", s.errors);
                for m in self.files.values_mut() {
                    if m.pinned {
                        continue;
                    }
                    m.state = match (stub, m.state) {
                        (true, _) => Some(FileState::Stub),
                        (false, Some(FileState::Stub)) => Some(FileState::Stub),
                        (false, Some(_)) => Some(FileState::Premigrated),
                        (false, None) => None,
                    };
                }
            }
            Op::Read { f } => {
                if self.files.contains_key(NAMES[f]) {
                    self.read(NAMES[f])?;
                }
            }
            Op::Pin { f, on } => {
                let name = NAMES[f];
                if let Some(m) = self.files.get_mut(name) {
                    m.pinned = on;
                    self.e.as_ref().unwrap().pin(name, on);
                }
            }
            Op::Release { f } => {
                let name = NAMES[f];
                let Some(m) = self.files.get(name).cloned() else {
                    return Ok(());
                };
                let r = self.e().t.release(&self.e().backing(name));
                let now = self.e().state(name);
                let m2 = self.files.get_mut(name).unwrap();
                match r {
                    Ok(coldtier::tier::manual::Released::AlreadyStub) => {
                        prop_assert_eq!(now, FileState::Stub);
                        prop_assert!(m.state.is_none() || m.state == Some(FileState::Stub));
                        m2.state = Some(FileState::Stub);
                    }
                    Ok(coldtier::tier::manual::Released::Now { .. }) => {
                        prop_assert!(!m.pinned, "released a pinned file");
                        prop_assert_ne!(
                            m.state,
                            Some(FileState::Resident),
                            "released without a copy"
                        );
                        prop_assert_eq!(now, FileState::Stub);
                        m2.state = Some(FileState::Stub);
                    }
                    Err(_) => {
                        prop_assert!(
                            m.pinned || m.state != Some(FileState::Premigrated),
                            "release of a premigrated unpinned file failed"
                        );
                    }
                }
            }
            Op::Gc => {
                self.e().gc();
            }
            Op::Restart => self.restart(),
            Op::CrashMigrate { point } => {
                failpoint::arm(MIGRATE_POINTS[point], FailAction::Panic);
                let _ = self.e().migrate(MigrateMode::Stub);
                failpoint::disarm_all();
                self.restart();
                for m in self.files.values_mut() {
                    if !m.pinned {
                        m.state = None;
                    }
                }
            }
            Op::CrashRecall { f, point } => {
                let name = NAMES[f];
                if !self.files.contains_key(name) {
                    return Ok(());
                }
                failpoint::arm(RECALL_POINTS[point], FailAction::Panic);
                let r = self.e().read(name);
                failpoint::disarm_all();
                if let Ok(got) = r {
                    // Not a stub: no recall, nothing crashed.
                    prop_assert_eq!(&got, &self.files[name].content);
                } else {
                    self.restart();
                    self.files.get_mut(name).unwrap().state = None;
                }
            }
        }
        self.check()
    }

    /// What must hold after every step.
    fn check(&self) -> Result<(), TestCaseError> {
        let e = self.e();
        e.settle();
        let names: Vec<String> = self.files.keys().map(|s| s.to_string()).collect();
        prop_assert_eq!(e.names(), names);
        for (name, m) in &self.files {
            prop_assert_eq!(
                e.size(name).unwrap(),
                m.content.len() as u64,
                "size of {}",
                name
            );
            let st = e.t.status(&e.backing(name)).unwrap();
            prop_assert_eq!(st.pinned, m.pinned, "pin of {}", name);
            if let Some(want) = m.state {
                prop_assert_eq!(st.state, want, "state of {}", name);
            }
        }
        Ok(())
    }

    /// At the end of a case: everything reads back, verify is clean, and the bucket holds
    /// exactly what the records name once gc ran.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        let names: Vec<&'static str> = self.files.keys().copied().collect();
        for name in names {
            self.read(name)?;
        }
        let findings = self.e().verify();
        prop_assert!(findings.is_empty(), "verify: {:?}", findings);
        self.e().gc();
        prop_assert_eq!(self.e().objects(), self.e().referenced());
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("COLDTIER_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(160)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // A failing case is shrunk to its shortest sequence; each try builds engines.
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_engine_agrees_with_the_model(ops in proptest::collection::vec(op(), 1..48)) {
        let dirs = Dirs::new();
        let store = Arc::new(MemoryStore::new());
        let e = Engine::start(&dirs, store.clone(), eager_settings());
        let mut w = World { dirs, store, e: Some(e), files: BTreeMap::new() };
        for op in &ops {
            w.apply(op)?;
        }
        w.finish()?;
        w.e.take().unwrap().stop();
    }
}
