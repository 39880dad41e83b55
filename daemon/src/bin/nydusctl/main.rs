//! `nydusctl`: query and control a running nydusd through its API socket.

mod show;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nydus_api::client::{Client, Reply};
use serde_json::{json, Value};

/// Query and control a running nydusd through its API socket (`nydusd --apisock`).
#[derive(Parser, Debug)]
#[command(name = "nydusctl", version, about)]
struct Args {
    /// The daemon's API socket.
    #[arg(short = 'S', long)]
    sock: PathBuf,
    /// Print the daemon's JSON answers as they are.
    #[arg(short = 'r', long, global = true)]
    raw: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Daemon information: version, id, state, mounts and their backends.
    Info,
    /// Change a setting at run time.
    Set {
        /// The setting (`log-level`).
        item: String,
        /// Its new value (for log-level: trace, debug, info, warn, error).
        value: String,
    },
    /// Show metrics.
    Metrics {
        /// Which: fsstats (default), backend, cache, files, inflight, pattern.
        #[arg(default_value = "fsstats")]
        kind: String,
        /// Only this mount (its mountpoint inside the daemon, e.g. /sub).
        #[arg(short = 'm', long)]
        mountpoint: Option<String>,
        /// Repeat every SECS seconds until interrupted.
        #[arg(short = 'I', long)]
        interval: Option<u64>,
    },
    /// Mount an image at a path inside the daemon's filesystem.
    Mount {
        /// The image's bootstrap.
        #[arg(short = 's', long)]
        source: String,
        /// Configuration file (upstream v1/v2 JSON or TOML).
        #[arg(short = 'c', long)]
        config: PathBuf,
        /// Where (e.g. /sub).
        #[arg(short = 'm', long)]
        mountpoint: String,
        /// Filesystem type.
        #[arg(short = 't', long, default_value = "rafs")]
        fs_type: String,
        /// Replace the image of an existing mount instead (remount).
        #[arg(long)]
        replace: bool,
    },
    /// Unmount an image.
    Umount {
        /// The mount.
        #[arg(short = 'm', long)]
        mountpoint: String,
    },
    /// Build an image inside the daemon, waiting for it to finish.
    Build {
        /// Source: a directory, or a layer file for the other types.
        source: String,
        /// Kind of source: directory, tar-rafs, targz-rafs, estargz-rafs or
        /// estargztoc-ref (as `nydus-image create --type`).
        #[arg(short = 't', long = "type", default_value = "directory")]
        source_type: String,
        /// The blob's id (estargztoc-ref: the layer digest's hex part).
        #[arg(long)]
        blob_id: Option<String>,
        /// Size of the eStargz blob in hex, for estargztoc-ref from a TOC.
        #[arg(long, value_name = "HEX")]
        blob_data_size: Option<String>,
        /// Bootstrap output.
        #[arg(short = 'B', long)]
        bootstrap: String,
        /// Directory for the blob.
        #[arg(short = 'D', long)]
        blob_dir: String,
        /// Compressor: none, lz4_block, zstd.
        #[arg(short = 'c', long)]
        compressor: Option<String>,
        /// Chunk size (hex or decimal).
        #[arg(short = 'S', long)]
        chunk_size: Option<String>,
        /// Parent bootstrap.
        #[arg(long)]
        parent_bootstrap: Option<String>,
    },
    /// Ask the daemon to unmount everything and exit.
    Exit,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Fail with the daemon's message on a non-2xx reply.
fn check(r: Reply, what: &str) -> Result<Reply> {
    if !r.ok() {
        bail!("{what}: HTTP {}: {}", r.status, r.message());
    }
    Ok(r)
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn run(a: &Args) -> Result<()> {
    let c = Client::new(&a.sock);
    match &a.cmd {
        Cmd::Info => {
            let v = check(c.request("GET", "/api/v2/daemon", None)?, "info")?.json()?;
            show::out(a.raw, &v, show::info);
        }
        Cmd::Set { item, value } => {
            if item != "log-level" && item != "log_level" {
                bail!("unknown setting {item:?}; settable: log-level");
            }
            let body = json!({ "log_level": value }).to_string();
            check(c.request("PUT", "/api/v1/daemon", Some(&body))?, "set log-level")?;
            if !a.raw {
                println!("log level set to {value}");
            }
        }
        Cmd::Metrics { kind, mountpoint, interval } => {
            let path = match kind.as_str() {
                "fsstats" | "fs" => "/api/v1/metrics",
                "backend" => "/api/v1/metrics/backend",
                "cache" | "blobcache" => "/api/v1/metrics/blobcache",
                "files" => "/api/v1/metrics/files",
                "inflight" => "/api/v1/metrics/inflight",
                "pattern" => "/api/v1/metrics/pattern",
                other => bail!("unknown metrics {other:?} (fsstats, backend, cache, files, inflight, pattern)"),
            };
            let path = match mountpoint {
                Some(m) => format!("{path}?id={}", enc(m)),
                None => path.to_string(),
            };
            loop {
                let v = check(c.request("GET", &path, None)?, "metrics")?.json()?;
                show::out(a.raw, &v, show::generic);
                match interval {
                    Some(s) => std::thread::sleep(Duration::from_secs((*s).max(1))),
                    None => break,
                }
            }
        }
        Cmd::Mount { source, config, mountpoint, fs_type, replace } => {
            let text =
                std::fs::read_to_string(config).with_context(|| format!("cannot read config {}", config.display()))?;
            let body = json!({ "source": source, "fs_type": fs_type, "config": text }).to_string();
            let method = if *replace { "PUT" } else { "POST" };
            let path = format!("/api/v1/mount?mountpoint={}", enc(mountpoint));
            check(c.request(method, &path, Some(&body))?, "mount")?;
            if !a.raw {
                println!("mounted {source} at {mountpoint}");
            }
        }
        Cmd::Umount { mountpoint } => {
            let path = format!("/api/v1/mount?mountpoint={}", enc(mountpoint));
            check(c.request("DELETE", &path, None)?, "umount")?;
            if !a.raw {
                println!("unmounted {mountpoint}");
            }
        }
        Cmd::Build {
            source,
            source_type,
            blob_id,
            blob_data_size,
            bootstrap,
            blob_dir,
            compressor,
            chunk_size,
            parent_bootstrap,
        } => {
            let body = json!({
                "source": source, "source_type": source_type, "bootstrap": bootstrap, "blob_dir": blob_dir,
                "compressor": compressor, "chunk_size": chunk_size, "parent_bootstrap": parent_bootstrap,
                "blob_id": blob_id, "blob_data_size": blob_data_size,
            });
            let r = check(c.request("POST", "/api/v1/build", Some(&body.to_string()))?, "build")?.json()?;
            let id = r["id"].as_str().context("the daemon's answer has no job id")?.to_string();
            let v = wait_build(&c, &id, a.raw)?;
            show::out(a.raw, &v, show::build);
            if v["state"] != "succeeded" {
                bail!("build {id} failed: {}", v["error"].as_str().unwrap_or("unknown error"));
            }
        }
        Cmd::Exit => {
            check(c.request("PUT", "/api/v1/daemon/exit", None)?, "exit")?;
            if !a.raw {
                println!("nydusd is exiting");
            }
        }
    }
    Ok(())
}

fn wait_build(c: &Client, id: &str, raw: bool) -> Result<Value> {
    let bar = (!raw).then(|| {
        let b = indicatif::ProgressBar::new(0);
        b.set_style(
            indicatif::ProgressStyle::with_template("{spinner} build {msg} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_message(id.to_string());
        b
    });
    loop {
        let v = check(c.request("GET", &format!("/api/v1/build/{id}"), None)?, "build status")?.json()?;
        if let Some(b) = &bar {
            b.set_length(v["progress"]["total_bytes"].as_u64().unwrap_or(0));
            b.set_position(v["progress"]["bytes"].as_u64().unwrap_or(0));
        }
        if v["state"] == "succeeded" || v["state"] == "failed" {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
