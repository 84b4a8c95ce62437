//! Failpoints: named places in the crash-sensitive steps (after the upload intent, after
//! the stub record, after the truncate ...) where a test stops the daemon. They exist only
//! in builds with the `testing` feature (the test suite's); in any other build
//! [`hit`] is an empty inline function and no environment variable is read.
//!
//! Armed with [`arm`] (in-process engine tests) or, in a daemon, by
//! `COLDTIER_TEST_FAILPOINT` read once at start ([`arm_from_env`]): `NAME` kills the
//! process with SIGKILL there, `NAME:pause=MS` sleeps there, `NAME:panic` panics there
//! (in-process tests: the step stops where a crash would stop it), `NAME:after=N` lets N
//! hits pass and kills the process at the next (a crash in the middle of a batch),
//! `NAME:hold=PATH` waits there until PATH exists (a test lets the step go on once it has
//! done what it does in between, whatever the machine's load; at most 120 s).

/// What an armed failpoint does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailAction {
    /// SIGKILL the process (a crash).
    Kill,
    /// Sleep this many milliseconds, then go on.
    Pause(u64),
    /// Panic (the in-process stand-in for a crash).
    Panic,
    /// Let this many more hits pass, then kill.
    KillAfter(u64),
    /// Wait until this path exists (at most 120 s), then go on.
    Hold(String),
}

#[cfg(feature = "testing")]
mod armed {
    use super::FailAction;
    use parking_lot::Mutex;

    pub static ARMED: Mutex<Vec<(String, FailAction)>> = Mutex::new(Vec::new());
    /// How many times each armed failpoint was reached (a test waits on it).
    pub static HITS: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
}

/// Parses `NAME`, `NAME:pause=MS`, `NAME:hold=PATH`, `NAME:after=N` or `NAME:panic`.
pub fn parse(spec: &str) -> Option<(String, FailAction)> {
    let spec = spec.trim();
    if spec.is_empty() {
        return None;
    }
    Some(match spec.split_once(':') {
        None => (spec.to_string(), FailAction::Kill),
        Some((name, "panic")) => (name.to_string(), FailAction::Panic),
        Some((name, rest)) if rest.starts_with("hold=") => {
            let path = rest.strip_prefix("hold=").filter(|p| !p.is_empty())?;
            (name.to_string(), FailAction::Hold(path.to_string()))
        }
        Some((name, rest)) if rest.starts_with("after=") => {
            let n = rest.strip_prefix("after=")?.parse().ok()?;
            (name.to_string(), FailAction::KillAfter(n))
        }
        Some((name, rest)) => {
            let ms = rest.strip_prefix("pause=")?.parse().ok()?;
            (name.to_string(), FailAction::Pause(ms))
        }
    })
}

/// Arms failpoint `name` (replacing an earlier arming of the same name).
#[cfg(feature = "testing")]
pub fn arm(name: &str, action: FailAction) {
    let mut a = armed::ARMED.lock();
    a.retain(|(n, _)| n != name);
    a.push((name.to_string(), action));
}

/// Disarms every failpoint.
#[cfg(feature = "testing")]
pub fn disarm_all() {
    armed::ARMED.lock().clear();
}

/// How many times failpoint `name` was reached while armed (before it acts: a test sees
/// a pause begin).
#[cfg(feature = "testing")]
pub fn hits(name: &str) -> u64 {
    armed::HITS
        .lock()
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, k)| *k)
}

/// Arms the failpoint `COLDTIER_TEST_FAILPOINT` names, if any (a daemon, at start).
pub fn arm_from_env() {
    #[cfg(feature = "testing")]
    if let Some((name, action)) = std::env::var("COLDTIER_TEST_FAILPOINT")
        .ok()
        .and_then(|s| parse(&s))
    {
        tracing::warn!(failpoint = %name, ?action, "test failpoint armed");
        arm(&name, action);
    }
}

/// Reached failpoint `name`: does what it is armed with, if it is.
#[inline]
pub fn hit(name: &str) {
    #[cfg(feature = "testing")]
    {
        let action = {
            let mut a = armed::ARMED.lock();
            match a.iter_mut().find(|(n, _)| n == name) {
                Some((_, FailAction::KillAfter(left))) if *left > 0 => {
                    *left -= 1;
                    None
                }
                Some((_, FailAction::KillAfter(_))) => Some(FailAction::Kill),
                Some((_, x)) => Some(x.clone()),
                None => None,
            }
        };
        if action.is_some() {
            let mut h = armed::HITS.lock();
            match h.iter_mut().find(|(n, _)| n == name) {
                Some((_, k)) => *k += 1,
                None => h.push((name.to_string(), 1)),
            }
        }
        match action {
            None => {}
            Some(FailAction::Pause(ms)) => {
                tracing::warn!(failpoint = name, ms, "test failpoint reached: pausing");
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            Some(FailAction::Hold(path)) => {
                tracing::warn!(failpoint = name, path, "test failpoint reached: pausing");
                let until = std::time::Instant::now() + std::time::Duration::from_secs(120);
                while !std::path::Path::new(&path).exists() && std::time::Instant::now() < until {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            Some(FailAction::Kill | FailAction::KillAfter(_)) => {
                tracing::error!(
                    failpoint = name,
                    "test failpoint reached: killing the daemon"
                );
                // SAFETY: sending a signal to ourselves.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
                std::thread::sleep(std::time::Duration::from_secs(10));
            }
            Some(FailAction::Panic) => panic!("test failpoint {name} reached"),
        }
    }
    #[cfg(not(feature = "testing"))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(parse("a-b"), Some(("a-b".into(), FailAction::Kill)));
        assert_eq!(
            parse("x:pause=250"),
            Some(("x".into(), FailAction::Pause(250)))
        );
        assert_eq!(parse("x:panic"), Some(("x".into(), FailAction::Panic)));
        assert_eq!(
            parse("x:after=2"),
            Some(("x".into(), FailAction::KillAfter(2)))
        );
        assert_eq!(parse("x:pause=soon"), None);
        assert_eq!(
            parse("x:hold=/tmp/go"),
            Some(("x".to_string(), FailAction::Hold("/tmp/go".to_string())))
        );
        assert_eq!(parse("x:hold="), None);
        assert_eq!(parse(" "), None);
    }
}
