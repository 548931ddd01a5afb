//! `rkube-shim`: the runtime's long-lived helpers (`shim-monitor`, `pause`) as their own small
//! executable. The `rkube` binary embeds it and writes it under the data directory when its
//! runtime starts; see the library's documentation for why.

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let code = rkube_shim::helper_main(&args).unwrap_or_else(|| {
        eprintln!(
            "usage: rkube-shim shim-monitor <container-dir> <pid> | rkube-shim pause [options] (started by the rkube runtime)"
        );
        2
    });
    std::process::exit(code);
}
