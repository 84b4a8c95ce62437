//! The layering of the crate (docs/architecture.md, "Layers"), checked on the source: each
//! module imports only the modules below it, no two modules import each other, the pure
//! model of the engine does no I/O, and each outside crate with a big surface is named in
//! one place. A `crate::x` path anywhere in a module's code (not its tests) counts as an
//! import.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import (besides itself).
const ALLOWED: &[(&str, &[&str])] = &[
    ("base", &[]),
    ("store", &["base"]),
    ("catalog", &["base"]),
    ("fs", &["base"]),
    ("control", &["base"]),
    ("tier", &["base", "store", "catalog", "fs"]),
    ("jobs", &["base", "store", "catalog", "fs", "tier"]),
    ("config", &["base", "store", "catalog", "fs", "tier"]),
    (
        "daemon",
        &[
            "base", "store", "catalog", "fs", "tier", "jobs", "control", "config", "cli",
        ],
    ),
    ("cli", &["base", "control", "config"]),
];

/// Inside `tier`: the pure model imports no other part of the engine.
const MODEL_ALLOWED: &[&str] = &["base", "store", "catalog", "tier::config", "tier::model"];

/// Outside crates named in one place only.
const CONFINED: &[(&str, &str)] = &[
    ("fuser::", "src/fs/fuse.rs"),
    ("rusqlite::", "src/catalog/"),
    ("aws_sdk_s3::", "src/store/s3"),
    ("aws_config::", "src/store/s3"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file without its tests: an inline `#[cfg(test)] mod x { ... }` runs to the
/// end of the file (the crate's convention, checked here), and comments are dropped.
fn code_of(text: &str, path: &Path) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate() {
        if l.trim() == "#[cfg(test)]" {
            let next = lines.get(i + 1).map_or("", |l| l.trim());
            if next.starts_with("mod ") && next.ends_with('{') {
                end = i;
                break;
            }
        }
    }
    // After the first inline test module, only more test modules may follow.
    for (i, l) in lines[end..].iter().enumerate() {
        if l.starts_with("mod ") || l.starts_with("pub mod ") {
            let prev = lines[end + i - 1].trim();
            assert!(
                prev == "#[cfg(test)]" || prev.starts_with("#[cfg(all(test"),
                "{}: a module after the tests: keep the test modules at the end",
                path.display()
            );
        }
    }
    lines[..end]
        .iter()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Files that are tests as a whole (`#[cfg(test)] mod tests;` and the store conformance).
fn test_only(p: &Path) -> bool {
    let name = p.file_name().unwrap().to_str().unwrap();
    name == "tests.rs" || name == "conformance.rs"
}

/// The module path of a file under src/ ("tier::model::state", "lib" for lib.rs).
fn module_of(src: &Path, p: &Path) -> Vec<String> {
    let rel = p.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_str().unwrap().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") {
        parts.pop();
    }
    parts
}

/// Every `crate::a::b` path in `code`, as ["a", "b"], including grouped `use crate::{a, b::c}`.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(pos) = code[i..].find("crate::") {
        let start = i + pos;
        i = start + 7;
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        if code[i..].starts_with('{') {
            // `crate::{a, b::{c, d}}`: the first segment of each item.
            let mut depth = 0;
            let mut item = String::new();
            for c in code[i..].chars() {
                match c {
                    '{' => {
                        depth += 1;
                        if depth == 1 {
                            continue;
                        }
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => {
                        push_item(&mut out, &item);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                if depth >= 1 {
                    item.push(c);
                }
            }
            push_item(&mut out, &item);
            continue;
        }
        let path: String = code[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        out.push(
            path.split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
        );
    }
    out
}

fn push_item(out: &mut Vec<Vec<String>>, item: &str) {
    let item = item.trim();
    if item.is_empty() {
        return;
    }
    let path: String = item
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    out.push(
        path.split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    );
}

struct Crate {
    /// file -> (its module path, its code without tests)
    files: BTreeMap<PathBuf, (Vec<String>, String)>,
}

fn load() -> Crate {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    rust_files(&src, &mut paths);
    let mut files = BTreeMap::new();
    for p in paths {
        if test_only(&p) {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let code = code_of(&text, &p);
        let rel = p.strip_prefix(src.parent().unwrap()).unwrap().to_path_buf();
        files.insert(rel, (module_of(&src, &p), code));
    }
    Crate { files }
}

#[test]
fn each_module_imports_only_the_modules_below_it() {
    let c = load();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut bad = Vec::new();
    for (file, (module, code)) in &c.files {
        let top = module[0].as_str();
        if top == "lib" || top == "main" {
            continue;
        }
        let Some(ok) = allowed.get(top) else {
            bad.push(format!(
                "{}: module `{top}` is not in tests/layers.rs ALLOWED: give it its layer",
                file.display()
            ));
            continue;
        };
        for p in crate_paths(code) {
            let Some(first) = p.first() else { continue };
            if first != top && !ok.contains(&first.as_str()) {
                bad.push(format!(
                    "{}: {top} imports crate::{}",
                    file.display(),
                    p.join("::")
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports against the layers:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_two_modules_import_each_other() {
    let c = load();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in c.files.values() {
        let top = &module[0];
        if top == "lib" || top == "main" {
            continue;
        }
        for p in crate_paths(code) {
            if let Some(first) = p.first() {
                if first != top {
                    edges.entry(top.clone()).or_default().insert(first.clone());
                }
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(n.to_string());
            return Some(cycle);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(cycle) = visit(n, &edges, &mut Vec::new(), &mut done) {
            panic!("an import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_engine_model_is_pure() {
    let c = load();
    let mut bad = Vec::new();
    for (file, (module, code)) in &c.files {
        if module.len() < 2 || module[0] != "tier" || module[1] != "model" {
            continue;
        }
        for p in crate_paths(code) {
            let joined = p.join("::");
            if !MODEL_ALLOWED
                .iter()
                .any(|a| joined == *a || joined.starts_with(&format!("{a}::")))
            {
                bad.push(format!("{}: crate::{joined}", file.display()));
            }
        }
        for io in [
            "std::fs",
            "backing::",
            "tokio::",
            "ObjectStore",
            "Catalog::open",
        ] {
            if code.contains(io) {
                bad.push(format!("{}: names {io}", file.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "the model does I/O or imports the engine:\n{}",
        bad.join("\n")
    );
}

#[test]
fn big_outside_crates_are_named_in_one_place() {
    let c = load();
    let mut bad = Vec::new();
    for (file, (_, code)) in &c.files {
        let f = file.to_str().unwrap();
        for (krate, home) in CONFINED {
            if code.contains(krate) && !f.starts_with(home) {
                bad.push(format!("{f} names {krate} (only {home} may)"));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_reader_sees_the_grouped_imports() {
    let paths = crate_paths(
        "use crate::{base::units, store::{A, B}};\nlet x = crate::tier::context::Tiering::new;",
    );
    assert_eq!(
        paths,
        vec![
            vec!["base".to_string(), "units".into()],
            vec!["store".into()],
            vec![
                "tier".into(),
                "context".into(),
                "Tiering".into(),
                "new".into()
            ],
        ]
    );
}
