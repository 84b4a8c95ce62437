//! POSIX conformance: the pjdfstest suite on a coldtier mount, compared test by test with
//! the same suite on a native directory. Any test that passes natively but not on the mount
//! fails this test, unless tests/pjdfstest-known.txt lists it (with its reason).

mod common;

use std::path::Path;
use std::process::Command;

use common::Mounted;

fn script(args: &[&str]) -> std::process::Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    Command::new("bash")
        .arg(root.join("scripts/pjdfstest.sh"))
        .args(args)
        .current_dir(root)
        .output()
        .expect("run scripts/pjdfstest.sh")
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn pjdfstest_on_the_mount_matches_native() {
    let bin = std::env::var("PJDFSTEST_BIN")
        .unwrap_or_else(|_| "/opt/coldtier-tools/bin/pjdfstest".into());
    assert!(
        Path::new(&bin).exists(),
        "pjdfstest is not installed at {bin}: run `scripts/pjdfstest.sh install` (scripts/test.sh does)"
    );
    let m = Mounted::new();
    let results = m.dir.path().join("results");
    std::fs::create_dir(&results).unwrap();
    let native = results.join("native.tsv");
    let mounted = results.join("mount.tsv");
    for (dir, out) in [(&m.native, &native), (&m.mnt, &mounted)] {
        let o = script(&["run", dir.to_str().unwrap(), out.to_str().unwrap()]);
        assert!(
            o.status.success(),
            "pjdfstest run on {}: {}",
            dir.display(),
            text(&o)
        );
        println!("{}", text(&o).lines().last().unwrap_or(""));
    }
    let count = |p: &Path, what: &str| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| l.split('\t').nth(1) == Some(what))
            .count()
    };
    // The suite really ran: hundreds of tests passed on both sides.
    assert!(
        count(&native, "passed") > 350,
        "native run passed too few tests"
    );
    assert!(
        count(&mounted, "passed") > 350,
        "mount run passed too few tests"
    );
    let o = script(&[
        "compare",
        native.to_str().unwrap(),
        mounted.to_str().unwrap(),
    ]);
    println!("{}", text(&o));
    assert!(
        o.status.success(),
        "pjdfstest differences on the mount:\n{}",
        text(&o)
    );
}
