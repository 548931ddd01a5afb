//! rkube's node runtime: images, pod sandboxes and containers behind the CRI v1 API.
//!
//! The kubelet only ever talks CRI, so this crate can be swapped for containerd. Start at
//! [`Runtime`]: it runs pod sandboxes ([`sandbox`]) and containers on overlayfs roots
//! ([`rootfs`]) from the image store ([`image`]), with OCI specs built in [`spec`], cgroups from
//! [`cgroups`], one shim process per container ([`shim`]) writing CRI logs ([`logs`]), and
//! `ExecSync` ([`exec`]); registry pulls live in [`image`], and the CRI gRPC server ([`cri`])
//! serves the image store and wraps [`Runtime`] for sandboxes and containers.
//!
//! The helper processes are started with a hidden subcommand: `create-container` (creates a
//! container, then becomes its `shim-monitor`, one per container) and `pause` (one per pod) run
//! the small `rkube-shim` executable ([`RuntimeConfig::lean_helper`]), whose code is the
//! `rkube-shim` crate; `exec` and `shim` (libcontainer's create path, on cgroup v2 only) run the
//! `rkube` binary. [`helper_main`] dispatches them all, so any binary calling it can serve as
//! either helper. Removed containers' directories are deleted in the background ([`trash`]);
//! seccomp profiles are compiled here ([`seccomp`]).

pub mod cgroups;
pub mod cri;
pub mod exec;
pub mod image;
pub mod install;
pub mod rootfs;
pub mod runtime;
pub mod sandbox;
pub mod seccomp;
pub mod shim;
pub mod spec;
pub mod trash;

/// The CRI log format, written by the shim monitor (which lives in `rkube-shim`).
pub use rkube_shim::logs;

pub use runtime::{
    ContainerState, ContainerStatus, ContainerUsage, ExecResult, PreparedExec, Runtime,
    RuntimeConfig, RuntimeError, SandboxState, SandboxStatus,
};
pub use sandbox::{LoopbackOnly, NetworkHook, SandboxConfig};
pub use spec::ContainerConfig;

/// Runs a helper subcommand (`shim`, `shim-monitor`, `pause`, `exec`) if `args` (the process
/// arguments after the program name) name one, returning its exit code; `None` otherwise.
/// Binaries call this first, before starting threads: the helpers must stay single-threaded.
pub fn helper_main(args: &[std::ffi::OsString]) -> Option<i32> {
    shim::helper_main(args)
        .or_else(|| rkube_shim::helper_main(args))
        .or_else(|| exec::helper_main(args))
}

/// An error and its sources on one line, for messages that travel as text (gRPC statuses).
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let more = e.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = e.source();
    }
    text
}
