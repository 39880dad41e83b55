//! Image builds run inside the daemon (`POST /api/v1/build`): a bounded pool of worker
//! threads (`--build-workers`, default 1) off the FUSE threads, each build using one chunk
//! thread, so builds take at most that many cores from reads.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use nydus_api::types::BuildRequest;
use nydus_api::ApiResponse;
use nydus_builder::blob::ChunkOptions;
use nydus_builder::chunkdict::parse_chunk_dict_arg;
use nydus_builder::create::{create, CreateOptions, CreateReport, SourceType};
use nydus_format::{Compressor, Digester};
use serde_json::{json, Value};

/// How many finished jobs are remembered.
const KEEP_FINISHED: usize = 256;

#[derive(Debug, Clone)]
enum JobState {
    Pending,
    Running,
    Succeeded(Box<CreateReport>),
    Failed(String),
}

#[derive(Debug)]
struct Job {
    state: Mutex<JobState>,
    files: AtomicU64,
    bytes: AtomicU64,
    total_bytes: AtomicU64,
}

/// Job ids, oldest first, and the jobs by id.
type JobTable = (Vec<String>, HashMap<String, Arc<Job>>);

/// The build worker pool and its jobs.
pub struct BuildPool {
    jobs: Mutex<JobTable>,
    queue: Mutex<mpsc::Sender<(Arc<Job>, CreateOptions)>>,
    next: AtomicU64,
}

impl BuildPool {
    /// Start `workers` build threads.
    pub fn new(workers: usize) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = mpsc::channel::<(Arc<Job>, CreateOptions)>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..workers.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("build-{n}")).spawn(move || loop {
                let next = rx.lock().map(|r| r.recv());
                match next {
                    Ok(Ok((job, opts))) => run(&job, &opts),
                    _ => break,
                }
            })?;
        }
        Ok(Arc::new(Self {
            jobs: Mutex::new((Vec::new(), HashMap::new())),
            queue: Mutex::new(tx),
            next: AtomicU64::new(1),
        }))
    }

    /// Validate and queue a build; answers `{"id": ...}` (202).
    pub fn submit(&self, req: BuildRequest) -> ApiResponse {
        let opts = match options(&req) {
            Ok(o) => o,
            Err(m) => return ApiResponse::error(400, m),
        };
        let id = format!("build-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let job = Arc::new(Job {
            state: Mutex::new(JobState::Pending),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total_bytes: AtomicU64::new(0),
        });
        {
            let mut j = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
            j.0.push(id.clone());
            j.1.insert(id.clone(), job.clone());
            while j.0.len() > KEEP_FINISHED {
                let old = j.0.remove(0);
                j.1.remove(&old);
            }
        }
        let sent = self.queue.lock().map(|q| q.send((job, opts)).is_ok()).unwrap_or(false);
        if !sent {
            return ApiResponse::error(503, "the build workers have stopped");
        }
        tracing::info!(id = %id, source = %req.source, "build queued");
        ApiResponse { status: 202, body: nydus_api::Body::Json(json!({ "id": id })) }
    }

    /// `GET /api/v1/build/{id}`.
    pub fn status(&self, id: &str) -> ApiResponse {
        let job = self.jobs.lock().ok().and_then(|j| j.1.get(id).cloned());
        let Some(job) = job else {
            return ApiResponse::error(404, format!("no build job {id}"));
        };
        let state = job.state.lock().map(|s| s.clone()).unwrap_or(JobState::Failed("poisoned".into()));
        let progress = json!({
            "files": job.files.load(Ordering::Relaxed),
            "bytes": job.bytes.load(Ordering::Relaxed),
            "total_bytes": job.total_bytes.load(Ordering::Relaxed),
        });
        let mut v = json!({ "id": id, "progress": progress });
        let (name, extra): (&str, Option<(&str, Value)>) = match state {
            JobState::Pending => ("pending", None),
            JobState::Running => ("running", None),
            JobState::Succeeded(r) => ("succeeded", Some(("result", result_json(&r)))),
            JobState::Failed(e) => ("failed", Some(("error", Value::String(e)))),
        };
        v["state"] = Value::String(name.into());
        if let Some((k, x)) = extra {
            v[k] = x;
        }
        ApiResponse::json(v)
    }
}

fn result_json(r: &CreateReport) -> Value {
    json!({
        "bootstrap": r.bootstrap,
        "blobs": r.blobs,
        "blob_sizes": r.blob_sizes,
        "blob_paths": r.blob_paths,
        "files": r.files,
        "chunks": r.chunks,
        "data_bytes": r.data_bytes,
        "bootstrap_size": r.bootstrap_size,
    })
}

fn run(job: &Job, opts: &CreateOptions) {
    if let Ok(mut s) = job.state.lock() {
        *s = JobState::Running;
    }
    let progress = |done: u64, total: u64, files: u64| {
        job.bytes.store(done, Ordering::Relaxed);
        job.total_bytes.store(total, Ordering::Relaxed);
        if files > 0 {
            job.files.store(files, Ordering::Relaxed);
        }
    };
    let r = create(opts, &progress).and_then(|staged| staged.publish());
    let state = match r {
        Ok(report) => {
            tracing::info!(bootstrap = %report.bootstrap.display(), blobs = report.blobs.len(), "build finished");
            job.files.store(report.files, Ordering::Relaxed);
            JobState::Succeeded(Box::new(report))
        }
        Err(e) => {
            tracing::warn!(error = %e, "build failed");
            JobState::Failed(e.to_string())
        }
    };
    if let Ok(mut s) = job.state.lock() {
        *s = state;
    }
}

/// The builder's options for a request, or why it cannot be built.
fn options(req: &BuildRequest) -> Result<CreateOptions, String> {
    let blob_size = req.blob_data_size.as_ref().map(blob_data_size).transpose()?;
    // Upstream's names (`dir-rafs`, `tar-rafs`, ..., `stargz_index`) and plain ones.
    let source_type = match req.source_type.as_str() {
        "directory" | "dir" | "dir-rafs" => SourceType::Dir,
        "tar" | "tar-rafs" => SourceType::Tar,
        "targz" | "tar.gz" | "targz-rafs" => SourceType::TarGz,
        "estargz-rafs" => SourceType::EStargz,
        "estargztoc-ref" | "stargz_index" => SourceType::EStargzToc { blob_size },
        other => {
            return Err(format!(
                "source_type {other:?} is not supported (use \"directory\", \"tar-rafs\", \"targz-rafs\", \"estargz-rafs\" or \"estargztoc-ref\")"
            ))
        }
    };
    if blob_size.is_some() && !matches!(source_type, SourceType::EStargzToc { .. }) {
        return Err("blob_data_size only applies to source_type \"estargztoc-ref\"".into());
    }
    if let Some(id) = &req.blob_id {
        if id.is_empty() || id.contains('/') || id.contains(':') {
            return Err(format!("blob_id {id:?}: give the blob's hex digest (no \"sha256:\", no path)"));
        }
    }
    if req.source == "-" {
        return Err("source \"-\" (stdin) has no meaning for the API: give a path".into());
    }
    let chunk_dict = req.chunk_dict.as_deref().map(parse_chunk_dict_arg).transpose().map_err(|e| e.to_string())?;
    let compressor = req.compressor.as_deref().unwrap_or("zstd");
    let compressor = Compressor::from_name(compressor)
        .ok_or_else(|| format!("unknown compressor {compressor:?} (use none, lz4_block or zstd)"))?;
    let chunk_size = match &req.chunk_size {
        None => 0x100000,
        Some(v) => chunk_size(v)?,
    };
    Ok(CreateOptions {
        source: PathBuf::from(&req.source),
        source_type,
        bootstrap: Some(PathBuf::from(&req.bootstrap)),
        blob: None,
        blob_dir: Some(PathBuf::from(&req.blob_dir)),
        blob_id: req.blob_id.clone(),
        chunk: ChunkOptions { chunk_size, compressor, digester: Digester::default(), threads: 1 },
        whiteout: Default::default(),
        parent_bootstrap: req.parent_bootstrap.as_ref().map(PathBuf::from),
        chunk_dict,
    })
}

/// `blob_data_size`: a JSON number, or hex digits (`0x` optional) as
/// `nydus-image create --blob-data-size` takes them.
fn blob_data_size(v: &Value) -> Result<u64, String> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            u64::from_str_radix(s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s), 16).ok()
        }
        _ => None,
    };
    n.filter(|&n| n > 0).ok_or_else(|| {
        format!("invalid blob_data_size {v}: give the blob's size in bytes as a number, or in hex as a string")
    })
}

fn chunk_size(v: &Value) -> Result<u32, String> {
    let n = match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let s = s.trim();
            match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            }
        }
        _ => None,
    };
    match n {
        Some(n) if n.is_power_of_two() && (0x1000..=0x100_0000).contains(&n) => Ok(n as u32),
        _ => Err(format!("invalid chunk_size {v}: a power of two from 0x1000 to 0x1000000")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes() {
        assert_eq!(chunk_size(&json!("0x100000")), Ok(0x100000));
        assert_eq!(chunk_size(&json!(4096)), Ok(4096));
        assert!(chunk_size(&json!(4097)).is_err());
        assert!(chunk_size(&json!(true)).is_err());
    }

    #[test]
    fn blob_data_sizes() {
        assert_eq!(blob_data_size(&json!(4096)), Ok(4096));
        assert_eq!(blob_data_size(&json!("0x1000")), Ok(4096));
        assert_eq!(blob_data_size(&json!("1000")), Ok(4096));
        for bad in [json!(0), json!(-1), json!("zz"), json!(true)] {
            assert!(blob_data_size(&bad).is_err(), "{bad}");
        }
    }

    fn request(source_type: &str) -> BuildRequest {
        serde_json::from_value(json!({"source": "/l", "source_type": source_type, "bootstrap": "/b", "blob_dir": "/d"}))
            .unwrap()
    }

    #[test]
    fn estargz_source_types() {
        assert_eq!(options(&request("estargz-rafs")).unwrap().source_type, SourceType::EStargz);
        let mut r = request("stargz_index");
        r.blob_data_size = Some(json!("0x2000"));
        r.blob_id = Some("ab".repeat(32));
        let o = options(&r).unwrap();
        assert_eq!(o.source_type, SourceType::EStargzToc { blob_size: Some(0x2000) });
        assert_eq!(o.blob_id.as_deref(), r.blob_id.as_deref());
        let mut r = request("targz-rafs");
        r.blob_data_size = Some(json!(10));
        assert!(options(&r).unwrap_err().contains("only applies"));
        let mut r = request("estargztoc-ref");
        r.blob_id = Some("sha256:ab".into());
        assert!(options(&r).unwrap_err().contains("hex digest"));
    }
}
