//! # nydus-api
//!
//! The control plane of `nydusd`, independent of the daemon that implements it:
//!
//! - [`request`]: the route table. An HTTP request (method, path, query, body) becomes a
//!   typed [`ApiRequest`], or a [`ApiResponse`] error with the right status (404 unknown
//!   path, 405 wrong method, 400 bad query or body, 413 body too large).
//! - [`types`]: the JSON bodies, with upstream Nydus's field names so existing clients
//!   (nydus-snapshotter, scripts) work unchanged.
//! - [`server`]: HTTP/1.1 on a Unix socket (and an optional TCP listener for `/metrics`).
//!   Each connection is its own task; each request runs on the blocking pool, so a slow
//!   mount never holds up other requests.
//! - [`client`]: a small blocking client (used by `nydusctl`).
//!
//! The daemon implements [`ApiHandler`]; this crate never names a daemon type. The
//! contract is written down in `api/openapi.yaml`.
#![deny(missing_docs)]

pub mod client;
pub mod error;
pub mod request;
pub mod server;
pub mod types;

pub use error::ApiError;
pub use request::{ApiRequest, MetricsKind};
pub use types::{ApiResponse, Body};

/// What the daemon implements: answer one parsed request. Called on a blocking thread;
/// it may take time (a mount reads a bootstrap) without delaying other requests.
pub trait ApiHandler: Send + Sync + 'static {
    /// Answer `req`.
    fn handle(&self, req: ApiRequest) -> ApiResponse;
}
