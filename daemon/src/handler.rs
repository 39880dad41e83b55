//! The daemon's side of the API: runs each [`ApiRequest`] against the mount table, the log
//! control and the build pool.

use std::collections::VecDeque;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use nydus_api::types::{DaemonConf, MountCmd};
use nydus_api::{ApiHandler, ApiRequest, ApiResponse, Body};
use serde_json::{json, Value};

use crate::builds::BuildPool;
use crate::logging::LogControl;
use crate::mounts::{MountError, Mounts};
use crate::redact;
use crate::server::Event;
use crate::state::MountState;

/// How many events `GET /api/v1/daemon/events` keeps.
const MAX_EVENTS: usize = 1024;

/// Everything the API acts on.
pub struct Handler {
    /// Daemon id.
    pub id: String,
    /// `--supervisor`, reported as is.
    pub supervisor: Option<String>,
    /// The mounts.
    pub mounts: Arc<Mounts>,
    /// The log level.
    pub log: Arc<LogControl>,
    /// Where `exit` is sent.
    pub events: Mutex<Sender<Event>>,
    /// Build jobs.
    pub builds: Arc<BuildPool>,
    /// Recent failures, for `GET /api/v1/daemon/events`.
    pub errors: Mutex<(u64, VecDeque<String>)>,
}

impl Handler {
    fn record(&self, msg: String) {
        if let Ok(mut e) = self.errors.lock() {
            e.0 += 1;
            if e.1.len() == MAX_EVENTS {
                e.1.pop_front();
            }
            e.1.push_back(msg);
        }
    }

    fn fail(&self, what: &str, e: MountError) -> ApiResponse {
        let msg = format!("{what}: {e}");
        tracing::warn!("{msg}");
        self.record(msg.clone());
        ApiResponse::error(e.status(), msg)
    }

    fn info(&self) -> Value {
        let backends: serde_json::Map<String, Value> =
            self.mounts.with_table(|t| t.iter().map(|(mp, m)| (mp.clone(), redact::backend(&m.cfg.backend))).collect());
        json!({
            "version": version(),
            "id": self.id,
            "supervisor": self.supervisor,
            "state": "RUNNING",
            "backend_collection": backends,
        })
    }

    fn set_level(&self, c: &DaemonConf) -> ApiResponse {
        match self.log.set_level(&c.log_level) {
            Ok(()) => {
                tracing::info!(level = %c.log_level, "log level changed");
                ApiResponse::no_content()
            }
            Err(e) => ApiResponse::error(400, format!("{e:#}")),
        }
    }

    fn mount(&self, mp: &str, cmd: MountCmd, replace: bool) -> ApiResponse {
        let what = if replace { format!("remount {mp}") } else { format!("mount {mp}") };
        let state = MountState {
            source: cmd.source,
            fs_type: cmd.fs_type,
            config: cmd.config,
            prefetch_files: cmd.prefetch_files.unwrap_or_default(),
        };
        if !replace && self.mounts.with_table(|t| t.contains_key(mp)) {
            return self.fail(&what, MountError::Exists(mp.to_string()));
        }
        if replace && !self.mounts.with_table(|t| t.contains_key(mp)) {
            return self.fail(&what, MountError::NotMounted(mp.to_string()));
        }
        let loaded = match self.mounts.load(&state, None) {
            Ok(l) => l,
            Err(e) => return self.fail(&what, e),
        };
        let r = if replace { self.mounts.remount(mp, state, loaded) } else { self.mounts.mount(mp, state, loaded) };
        match r {
            Ok(()) => ApiResponse::no_content(),
            Err(e) => self.fail(&what, e),
        }
    }

    fn config(&self) -> Value {
        let mounts: serde_json::Map<String, Value> = self.mounts.with_table(|t| {
            t.iter()
                .map(|(mp, m)| {
                    let v = json!({
                        "source": m.state.source,
                        "fs_type": m.state.fs_type,
                        "prefetch_files": m.state.prefetch_files,
                        "backend": redact::backend(&m.cfg.backend),
                        "cache": {
                            "work_dir": m.cfg.cache.work_dir,
                            "digest_validate": m.cfg.cache.digest_validate,
                        },
                        "rafs": {
                            "mode": m.cfg.fs.mode,
                            "digest_validate": m.cfg.fs.digest_validate,
                            "iostats_files": m.cfg.fs.iostats_files,
                            "enable_xattr": m.cfg.fs.enable_xattr,
                        },
                    });
                    (mp.clone(), v)
                })
                .collect()
        });
        json!({ "id": self.id, "log_level": self.log.level(), "mounts": mounts })
    }

    fn blobs(&self, id: Option<&str>) -> ApiResponse {
        let list: Vec<Value> = self.mounts.with_table(|t| {
            t.iter()
                .filter(|(mp, _)| id.is_none_or(|i| i == mp.as_str()))
                .flat_map(|(mp, m)| {
                    let rafs = m.images.current();
                    let infos: Vec<Value> = rafs
                        .bootstrap()
                        .blobs
                        .iter()
                        .map(|b| {
                            json!({
                                "blob_id": b.blob_id,
                                "mountpoint": mp,
                                "compressed_size": b.compressed_size,
                                "uncompressed_size": b.uncompressed_size,
                                "chunk_count": b.chunk_count,
                            })
                        })
                        .collect();
                    infos
                })
                .collect()
        });
        if let Some(i) = id {
            if !self.mounts.with_table(|t| t.contains_key(i)) {
                return ApiResponse::error(404, format!("nothing is mounted at {i}"));
            }
        }
        ApiResponse::json(Value::Array(list))
    }
}

impl ApiHandler for Handler {
    fn handle(&self, req: ApiRequest) -> ApiResponse {
        match req {
            ApiRequest::DaemonInfo => ApiResponse::json(self.info()),
            ApiRequest::DaemonInfoV2 => {
                let mut v = self.info();
                let mounts: Vec<Value> = self
                    .mounts
                    .state()
                    .mounts
                    .into_iter()
                    .map(|(mp, m)| {
                        json!({"mountpoint": mp, "source": m.source, "fs_type": m.fs_type, "prefetch_files": m.prefetch_files})
                    })
                    .collect();
                v["mounts"] = Value::Array(mounts);
                ApiResponse::json(v)
            }
            ApiRequest::ConfigureDaemon(c) | ApiRequest::ConfigureDaemonV2(c) | ApiRequest::SetConfig(c) => {
                self.set_level(&c)
            }
            ApiRequest::Events => {
                let (total, list) = self.errors.lock().map(|e| (e.0, e.1.clone())).unwrap_or_default();
                ApiResponse::json(json!({"max_errors": MAX_EVENTS, "total_errors": total, "errors": list}))
            }
            ApiRequest::Exit => {
                tracing::info!("exit requested through the API");
                let _ = self.events.lock().map(|tx| tx.send(Event::Exit));
                ApiResponse::no_content()
            }
            ApiRequest::Backend { mountpoint } => {
                match self.mounts.with_table(|t| t.get(&mountpoint).map(|m| redact::backend(&m.cfg.backend))) {
                    Some(v) => ApiResponse::json(v),
                    None => ApiResponse::error(404, format!("nothing is mounted at {mountpoint}")),
                }
            }
            ApiRequest::Mount { mountpoint, cmd } => self.mount(&mountpoint, cmd, false),
            ApiRequest::Remount { mountpoint, cmd } => self.mount(&mountpoint, cmd, true),
            ApiRequest::Umount { mountpoint } => match self.mounts.umount(&mountpoint) {
                Ok(()) => ApiResponse::no_content(),
                Err(e) => self.fail(&format!("umount {mountpoint}"), e),
            },
            ApiRequest::Metrics { kind, id, latest } => crate::metrics::json(&self.mounts, kind, id.as_deref(), latest),
            ApiRequest::Prometheus => ApiResponse {
                status: 200,
                body: Body::Text {
                    content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text: crate::metrics::prometheus(&self.mounts),
                },
            },
            ApiRequest::GetConfig => ApiResponse::json(self.config()),
            ApiRequest::CreateBlob(_) => ApiResponse::error(
                501,
                "adding blob caches by API is for fscache mode, which this nydusd does not support; mount the image with POST /api/v1/mount",
            ),
            ApiRequest::GetBlobs { id } => self.blobs(id.as_deref()),
            ApiRequest::DeleteBlob { blob_id } => ApiResponse::error(
                501,
                format!("removing blob {blob_id} by API is for fscache mode, which this nydusd does not support"),
            ),
            ApiRequest::Build(b) => self.builds.submit(b),
            ApiRequest::BuildStatus { id } => self.builds.status(&id),
        }
    }
}

/// Build facts (upstream's `BuildTimeInfo`).
pub fn version() -> Value {
    json!({
        "package_ver": env!("CARGO_PKG_VERSION"),
        "git_commit": option_env!("NYDUS_GIT_COMMIT").unwrap_or("unknown"),
        "build_time": option_env!("NYDUS_BUILD_TIME").unwrap_or("unknown"),
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
        "rustc": option_env!("NYDUS_RUSTC").unwrap_or("unknown"),
    })
}
