//! The hidden helper subcommands the container runtime starts this binary with: `shim` and
//! `shim-monitor` (one per container), `pause` (the pod sandbox holder) and `exec` (ExecSync).
//! They are not for people: the runtime passes their arguments, and their behaviour lives in
//! `rkube_runtime` (see its `shim`, `sandbox` and `exec` modules).

use std::process::ExitCode;

/// Runs a helper subcommand if the command line names one; `None` for every other command.
pub fn dispatch() -> Option<ExitCode> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = rkube_runtime::helper_main(&args)?;
    Some(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}
