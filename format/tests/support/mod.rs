//! Helpers shared by the format crate's integration tests and by the fuzz
//! targets in `tests/fuzz` (which include this directory with `#[path]`).
#![allow(dead_code)]

pub mod inputs;
pub mod traverse;
pub mod tree;
