//! pybake: a declarative, content-addressed build system.
//!
//! Data flows one way: recipe text -> [`recipe`] (resolved) -> [`graph`] -> [`derivation`] hash
//! -> [`store`] lookup -> ([`cache`] substitution | [`fetch`] + [`action`] (the build), driven by
//! [`scheduler`]) -> store. [`project::Project`] is the entry point that ties them together for a
//! command; [`cache`] also pushes outputs to binary caches shared between machines. Beneath
//! them all, [`atomic`] is how any of them replaces a file that others may read.

pub mod action;
pub mod archive;
pub mod atomic;
pub mod cache;
pub mod cli;
pub mod config;
pub mod derivation;
pub mod eval_cache;
pub mod exit;
pub mod explain;
pub mod fetch;
pub mod graph;
pub mod hash;
pub mod lock;
pub mod progress;
pub mod project;
pub mod recipe;
pub mod scheduler;
pub mod serve;
pub mod store;
pub mod toolchain;
