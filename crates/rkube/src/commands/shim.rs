//! The hidden helper subcommands the container runtime starts: `shim` (creates one container,
//! then becomes its `shim-monitor`), `exec` (ExecSync) and, served by the embedded `rkube-shim`
//! executable in production, `shim-monitor` and `pause` (the pod sandbox holder). They are not
//! for people: the runtime passes their arguments, and their behaviour lives in `rkube_runtime`
//! (`shim`, `exec`) and `rkube_shim` (`monitor`, `pause`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The `rkube-shim` executable, built statically by `build.rs`. The long-lived helpers run it
/// rather than this binary so that each container and pod costs little resident memory (see
/// `rkube_shim`); it travels inside `rkube` so that rkube stays one file to ship.
const LEAN_HELPER: &[u8] = include_bytes!(env!("RKUBE_SHIM_EXE"));

/// The sha256 of [`LEAN_HELPER`], computed by `build.rs`, so that finding the helper installed
/// does not read the embedded bytes (which would make them resident in the runtime).
const LEAN_HELPER_SHA256: &str = env!("RKUBE_SHIM_SHA256");

/// Runs a helper subcommand if the command line names one; `None` for every other command.
pub fn dispatch() -> Option<ExitCode> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = rkube_runtime::helper_main(&args)?;
    Some(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// Writes the embedded `rkube-shim` to `<data_dir>/data/<sha256>/bin/rkube-shim` (unless it is
/// there already, verified) and returns its path.
pub fn install_lean_helper(
    data_dir: &Path,
) -> Result<PathBuf, rkube_runtime::install::InstallError> {
    rkube_runtime::install::install_executable(
        data_dir,
        "rkube-shim",
        LEAN_HELPER,
        LEAN_HELPER_SHA256,
    )
}
