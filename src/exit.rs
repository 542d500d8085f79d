//! What kind of problem an error is, which decides pybake's exit code (README, `--help`):
//! 1 a build failed, 2 the user's to fix (recipe, lockfile, arguments, a pinned hash that does
//! not match), 3 the environment's (network, disk, permissions, an unreachable cache).
//! Every module's error says its class from its type, never from its message.

/// The class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// A build step failed, or a build produced nothing (exit code 1).
    Build,
    /// Fix the recipe, lockfile, configuration or arguments (exit code 2).
    User,
    /// Fix this machine or its network: disk, permissions, connectivity (exit code 3).
    Environment,
}

impl Class {
    pub fn exit_code(self) -> i32 {
        match self {
            Class::Build => 1,
            Class::User => 2,
            Class::Environment => 3,
        }
    }
}
