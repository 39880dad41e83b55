//! Metrics answers of the API: upstream's JSON shapes per mount, and Prometheus text for
//! all mounts ([`crate::prometheus`]).

use nydus_api::{ApiResponse, MetricsKind};
use serde_json::{Map, Value};

use crate::mounts::{Mount, Mounts};
use crate::prometheus::{self, MountMetrics};

fn one(m: &Mount, kind: MetricsKind, latest: bool) -> Result<Value, ApiResponse> {
    Ok(match kind {
        MetricsKind::Global => m.metrics.global_json(),
        MetricsKind::Files => m.metrics.files_json(latest),
        MetricsKind::Pattern => m.metrics.pattern_json(),
        MetricsKind::Inflight => m.metrics.inflight_json(),
        MetricsKind::BlobCache => serde_json::to_value(m.cache.metrics()).unwrap_or(Value::Null),
        MetricsKind::Backend => match m.backend.metrics() {
            Some(b) => b.snapshot_json(),
            None => return Err(ApiResponse::error(404, "this mount's backend keeps no metrics")),
        },
    })
}

/// `GET /api/v1/metrics[/…][?id=MOUNTPOINT]`: the named mount's metrics; without `id`,
/// the only mount's, or an object keyed by mountpoint when there are several.
pub fn json(mounts: &Mounts, kind: MetricsKind, id: Option<&str>, latest: bool) -> ApiResponse {
    let r = mounts.with_table(|t| -> Result<Value, ApiResponse> {
        match id {
            Some(id) => match t.get(id) {
                Some(m) => one(m, kind, latest),
                None => Err(ApiResponse::error(404, format!("nothing is mounted at {id}"))),
            },
            None if t.len() == 1 => t.values().next().map_or(Ok(Value::Null), |m| one(m, kind, latest)),
            None => {
                let mut all = Map::new();
                for (mp, m) in t {
                    all.insert(mp.clone(), one(m, kind, latest)?);
                }
                Ok(Value::Object(all))
            }
        }
    });
    match r {
        Ok(v) => ApiResponse::json(v),
        Err(e) => e,
    }
}

/// `GET /metrics`.
pub fn prometheus(mounts: &Mounts) -> String {
    mounts.with_table(|t| {
        let backends: Vec<_> = t.values().map(|m| m.backend.metrics()).collect();
        let list: Vec<MountMetrics<'_>> = t
            .iter()
            .zip(&backends)
            .map(|((mp, m), b)| MountMetrics {
                mountpoint: mp,
                fs: &m.metrics,
                backend: b.as_deref(),
                cache: m.cache.metrics(),
            })
            .collect();
        prometheus::render(&list)
    })
}
