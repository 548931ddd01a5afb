//! The runtime's helper processes as a small binary of this crate, so the crate's own
//! end-to-end tests can run containers without building `rkube` (which serves the same
//! subcommands through the same [`rkube_runtime::helper_main`]).

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = rkube_runtime::helper_main(&args).unwrap_or_else(|| {
        eprintln!(
            "usage: rkube-runtime-helper shim|shim-monitor|pause|exec ... (started by the runtime)"
        );
        2
    });
    std::process::exit(code);
}
