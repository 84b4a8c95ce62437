//! The progress line of long CLI commands on a terminal: files, bytes, rate and, once the
//! daemon has said how much there is to do (`Progress::totals`), a bar and an ETA. Drawn
//! on stderr (stdout stays clean for `--json`), at most 10 times a second, and only when
//! stderr is a tty.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::base::units::human_bytes;
use crate::control::protocol::Progress;

/// "1:05", "1:02:03".
pub fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The text of one progress line.
pub fn line(
    message: &str,
    files: u64,
    bytes: u64,
    totals: Option<(u64, u64)>,
    elapsed: Duration,
) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { bytes as f64 / secs } else { 0.0 };
    let rate_text = format!("{}/s", human_bytes(rate as u64));
    match totals {
        Some((tf, tb)) if tf > 0 => {
            // Progress by bytes when there are bytes, else by files.
            let frac = if tb > 0 {
                bytes as f64 / tb as f64
            } else {
                files as f64 / tf as f64
            }
            .clamp(0.0, 1.0);
            const W: usize = 24;
            let full = (frac * W as f64).round() as usize;
            let eta = if frac > 0.0 && frac < 1.0 {
                clock(Duration::from_secs_f64(secs / frac * (1.0 - frac)))
            } else {
                "-".into()
            };
            format!(
                "{message} [{}{}] {:>3}%  {files}/{tf} files  {}/{}  {rate_text}  ETA {eta}",
                "#".repeat(full),
                "-".repeat(W - full),
                (frac * 100.0).floor() as u64,
                human_bytes(bytes),
                human_bytes(tb),
            )
        }
        _ if files == 0 && bytes == 0 => format!("{message}  {}", clock(elapsed)),
        _ => format!(
            "{message}: {files} files, {}  {rate_text}  {}",
            human_bytes(bytes),
            clock(elapsed)
        ),
    }
}

/// A progress line on stderr, redrawn in place.
pub struct Bar {
    tty: bool,
    start: Instant,
    throttle: crate::base::progress::Throttle,
    totals: Option<(u64, u64)>,
    shown: bool,
}

impl Default for Bar {
    fn default() -> Self {
        Self::new()
    }
}

impl Bar {
    /// A bar that draws only if stderr is a terminal.
    pub fn new() -> Bar {
        use std::io::IsTerminal;
        Bar {
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            throttle: crate::base::progress::Throttle::new(Duration::from_millis(100)),
            totals: None,
            shown: false,
        }
    }

    /// A bar that never draws (`-q`).
    pub fn hidden() -> Bar {
        let mut b = Bar::new();
        b.tty = false;
        b
    }

    /// One progress report from the daemon.
    pub fn update(&mut self, p: &Progress) {
        if let Some(t) = p.totals {
            self.totals = Some((t.files, t.bytes));
            self.start = Instant::now(); // the rate and ETA count from the start of the work
        }
        if !self.tty {
            return;
        }
        // The first report with totals is drawn at once (the bar appears however fast
        // the work is); others at most ten times a second, the last one at `finish`.
        if let Some(p) = self.throttle.offer(p.clone()) {
            self.draw(&p);
        }
    }

    fn draw(&mut self, p: &Progress) {
        let text = line(
            &p.message,
            p.files,
            p.bytes,
            self.totals,
            self.start.elapsed(),
        );
        let mut e = std::io::stderr();
        let _ = write!(e, "\r\x1b[2K{text}");
        let _ = e.flush();
        self.shown = true;
    }

    /// Draws the last report if the throttle held it back, and ends the line (if one was
    /// drawn).
    pub fn finish(&mut self) {
        if let Some(p) = self.throttle.flush() {
            self.draw(&p);
        }
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_bar_rate_and_eta() {
        let l = line(
            "migrating",
            3,
            1 << 20,
            Some((12, 4 << 20)),
            Duration::from_secs(10),
        );
        assert!(l.contains("[######------------------]  25%"), "{l}");
        assert!(l.contains("3/12 files"), "{l}");
        assert!(l.contains("1.0 MiB/4.0 MiB"), "{l}");
        assert!(l.contains("102.4 KiB/s"), "{l}");
        assert!(l.contains("ETA 0:30"), "{l}");
        let l = line("status", 300, 0, None, Duration::from_secs(65));
        assert_eq!(l, "status: 300 files, 0 B  0 B/s  1:05");
        assert_eq!(clock(Duration::from_secs(3723)), "1:02:03");
    }
}
