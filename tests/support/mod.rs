//! Helpers shared by the integration tests: `mod support;` in a test file.
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod http;
pub mod servers;

#[allow(unused_imports)]
pub use http::{refused_url, Reply, Route, TestServer};
