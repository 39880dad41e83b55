//! Progress bars, shown only when stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A byte-counting progress bar (a no-op when stderr is not a TTY).
pub struct Bar(Option<ProgressBar>);

impl Bar {
    /// A new bar labelled `what`.
    pub fn bytes(what: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let pb = ProgressBar::new(0);
        pb.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
            )
            .expect("valid template"),
        );
        pb.set_prefix(what.to_string());
        Self(Some(pb))
    }

    /// Report `done` of `total` bytes over `files` files.
    pub fn update(&self, done: u64, total: u64, files: u64) {
        if let Some(pb) = &self.0 {
            pb.set_length(total);
            pb.set_position(done);
            if files > 0 {
                pb.set_message(format!("{files} files"));
            }
        }
    }

    /// Clear the bar.
    pub fn finish(&self) {
        if let Some(pb) = &self.0 {
            pb.finish_and_clear();
        }
    }
}
