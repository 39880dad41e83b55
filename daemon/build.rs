//! Records build facts reported by `GET /api/v1/daemon` (`version`).

use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    if let Some(v) = output(&rustc, &["--version"]) {
        println!("cargo:rustc-env=NYDUS_RUSTC={v}");
    }
    if let Some(c) = output("git", &["rev-parse", "--short=12", "HEAD"]) {
        println!("cargo:rustc-env=NYDUS_GIT_COMMIT={c}");
    }
    if let Some(t) = output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]) {
        println!("cargo:rustc-env=NYDUS_BUILD_TIME={t}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
