//! Logging: tracing to the daemon's log file (reopened on SIGHUP) or to stderr, with
//! syslog priorities when stderr is the journal.

use std::path::Path;

/// Sets up tracing: to the log file (no colours), or to stderr in the foreground. In the
/// foreground (systemd runs `coldtier mount --foreground`) lines carry no timestamp (the
/// journal adds its own) and no colours; when stderr is the journal itself
/// (`JOURNAL_STREAM` names it) each line starts with its syslog priority (`<3>` error ...
/// `<7>` debug), so `journalctl -p warning` picks out warnings and errors.
pub fn init_logging(filter: &str, file: Option<&Path>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("bad log filter `{filter}`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(path) => {
            let f = crate::base::private::open_private(path, true)?;
            let _ = LOG_FILE.set(LogFile {
                path: path.to_path_buf(),
                file: std::sync::Mutex::new(f),
            });
            builder.with_ansi(false).with_writer(LogMaker).init();
        }
        None => {
            let format = tracing_subscriber::fmt::format()
                .with_target(false)
                .with_ansi(false)
                .without_time();
            builder
                .with_ansi(false)
                .event_format(JournalFormat {
                    inner: format,
                    priority: stderr_is_journal(),
                })
                .with_writer(std::io::stderr)
                .init();
        }
    }
    Ok(())
}

/// The daemon's log file, reopened by [`reopen_log`] (SIGHUP, after logrotate moved it).
struct LogFile {
    path: std::path::PathBuf,
    file: std::sync::Mutex<std::fs::File>,
}

static LOG_FILE: std::sync::OnceLock<LogFile> = std::sync::OnceLock::new();

/// Writes log lines to [`LOG_FILE`].
#[derive(Clone, Copy)]
struct LogMaker;

struct LogWriter(std::sync::MutexGuard<'static, std::fs::File>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogMaker {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        let f = LOG_FILE
            .get()
            .expect("the log file is set before the subscriber");
        LogWriter(f.file.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Opens the log file again at its path (logrotate renamed the old one) and points the
/// log, stdout and stderr at it. Nothing to do when logging goes to stderr.
pub fn reopen_log() -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let Some(lf) = LOG_FILE.get() else {
        return Ok(());
    };
    let new = crate::base::private::open_private(&lf.path, true)?;
    // SAFETY: dup2 onto this process's standard descriptors.
    unsafe {
        libc::dup2(new.as_raw_fd(), 1);
        libc::dup2(new.as_raw_fd(), 2);
    }
    *lf.file.lock().unwrap_or_else(|p| p.into_inner()) = new;
    Ok(())
}

/// True when stderr is the journal stream systemd connected (`JOURNAL_STREAM` is
/// "DEVICE:INODE" of that stream, see systemd.exec(5)).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fd 2 stays open for the whole process; ManuallyDrop never closes it.
    let stderr = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(2)
    });
    stderr
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// The fmt event format, with the `<N>` syslog priority prefix the journal reads when
/// `priority` is set.
struct JournalFormat<F> {
    inner: F,
    priority: bool,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if self.priority {
            let p = match *event.metadata().level() {
                tracing::Level::ERROR => 3,
                tracing::Level::WARN => 4,
                tracing::Level::INFO => 6,
                _ => 7,
            };
            write!(writer, "<{p}>")?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}
