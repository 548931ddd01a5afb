//! Strategies of `apps/v1`.

pub mod deployment;
pub mod replicaset;
