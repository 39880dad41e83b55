//! The log sink, with a level that the API can change at run time.

use std::io::IsTerminal;
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Changes the level of the installed subscriber.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    level: Mutex<String>,
}

impl LogControl {
    /// The current level.
    pub fn level(&self) -> String {
        self.level.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Switch to `level` (trace, debug, info, warn, error).
    pub fn set_level(&self, level: &str) -> Result<()> {
        let filter = filter(level)?;
        self.handle.reload(filter).context("cannot change the log level")?;
        if let Ok(mut l) = self.level.lock() {
            *l = level.to_string();
        }
        Ok(())
    }
}

fn filter(level: &str) -> Result<EnvFilter> {
    if !["trace", "debug", "info", "warn", "error"].contains(&level) {
        anyhow::bail!("invalid log level {level:?} (use trace, debug, info, warn or error)");
    }
    // fuse-backend-rs logs multi-line session details at info; keep them
    // for debug/trace runs only. Its Vfs warns about every FORGET the kernel sends
    // for an image already unmounted through the API, which is expected.
    let spec = match level {
        "info" | "warn" | "error" => format!("{level},fuse_backend_rs=warn,fuse_backend_rs::api::vfs=error"),
        other => other.to_string(),
    };
    EnvFilter::try_new(&spec).with_context(|| format!("invalid log level {level:?}"))
}

/// Install the subscriber: to `file` (appending) or stderr.
pub fn init(level: &str, file: Option<&std::path::Path>) -> Result<LogControl> {
    let (layer, handle) = reload::Layer::new(filter(level).with_context(|| format!("--log-level {level}"))?);
    let fmt = tracing_subscriber::fmt::layer().with_target(false);
    match file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open log file {}", p.display()))?;
            let fmt = fmt.with_ansi(false).with_writer(Mutex::new(f));
            tracing_subscriber::registry().with(layer).with(fmt).init();
        }
        None => {
            let fmt = fmt.with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr);
            tracing_subscriber::registry().with(layer).with(fmt).init();
        }
    }
    Ok(LogControl { handle, level: Mutex::new(level.to_string()) })
}
