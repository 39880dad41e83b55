//! Integration tests of the blob cache over real files in temporary
//! directories: one binary, one module per concern.

mod concurrency;
mod errors;
mod eviction;
mod persistence;
mod prefetch;
mod read;
mod util;
