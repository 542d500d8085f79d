//! pybake: a declarative, content-addressed build system.
//!
//! Data flows one way: recipe text -> [`recipe`] (resolved) -> [`graph`] -> [`derivation`] hash
//! -> [`store`] lookup -> [`fetch`] + [`build`] (driven by [`scheduler`]) -> store.

pub mod archive;
pub mod build;
pub mod cache;
pub mod cli;
pub mod derivation;
pub mod fetch;
pub mod graph;
pub mod hash;
pub mod lock;
pub mod progress;
pub mod recipe;
pub mod scheduler;
pub mod serve;
pub mod store;
pub mod toolchain;
