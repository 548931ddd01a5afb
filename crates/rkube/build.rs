//! Three things about how `rkube` is linked and what it carries (the third: the functions
//! `rkube runtime` runs are placed together, from `runtime-symbol-order.txt`; see below).
//!
//! 1. It is linked position-dependent (`-no-pie`), as Go links the Kubernetes and containerd
//!    binaries. As a PIE every rkube process applies about 58,000 relative relocations at
//!    start, reading a 1.4 MB relocation table and dirtying the 1 MB `.data.rel.ro` it points
//!    into: measured 1.8 MiB more resident memory per process (BENCHMARKS.md, runtime). The
//!    price is that the executable's own code is not address-randomised (libraries still are).
//!
//! 2. It embeds the small helper executable `rkube-shim` (crate `crates/shim`): the container
//!    shim monitor and the pod holder, one process per container and per pod, which as this
//!    binary kept 4.6 and 6.0 MiB resident, mostly its code and the C library. This script
//!    builds that crate with the workspace's `lean-helper` profile (size-optimised, LTO, abort
//!    on panic, stripped), linked statically (`+crt-static`, position-dependent: no dynamic
//!    loader or shared libraries to map, no start-up relocations), into its own target
//!    directory inside `OUT_DIR`, and hands its path to the crate as `RKUBE_SHIM_EXE`
//!    (`include_bytes!` in `src/commands/shim.rs`) and its sha256 as `RKUBE_SHIM_SHA256`. The
//!    runtime writes it under the data directory when it starts (`rkube_runtime::install`), as
//!    k3s unpacks its helpers, so `rkube` stays one file to ship.
//!
//! The nested cargo uses the same toolchain (`CARGO`, `RUSTC`), the workspace's `Cargo.lock`
//! (`--locked`) and no network (`--offline`: every dependency of `rkube-shim` is also one of
//! `rkube`'s, so it is already present), and shares this build's job slots (jobserver).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};

fn main() {
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    // The functions `rkube runtime` runs, placed together (scripts/runtime-symbol-order makes
    // the list): its resident code is then a few 64 KiB blocks, not one per function among the
    // rest of the binary's. Only LLD takes the option; it is Rust's default linker for this
    // target. Names the build does not have are ignored.
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join("runtime-symbol-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    if var("TARGET") == "x86_64-unknown-linux-gnu" && order.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let exe = build_lean_helper();
    println!("cargo:rustc-env=RKUBE_SHIM_EXE={}", exe.display());
    let bytes =
        std::fs::read(&exe).unwrap_or_else(|e| fail(&format!("reading {}: {e}", exe.display())));
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo:rustc-env=RKUBE_SHIM_SHA256={digest}");
}

fn var(name: &str) -> String {
    env::var(name).unwrap_or_else(|_| fail(&format!("cargo did not set {name}")))
}

fn fail(message: &str) -> ! {
    eprintln!("error: building the embedded rkube-shim: {message}");
    std::process::exit(1);
}

fn build_lean_helper() -> PathBuf {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| fail("crates/rkube has no workspace above it"));
    let shim = workspace.join("crates").join("shim");
    for input in [
        shim.clone(),
        workspace.join("Cargo.toml"),
        workspace.join("Cargo.lock"),
    ] {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let out_dir = PathBuf::from(var("OUT_DIR"));
    let target = var("TARGET");
    let target_dir = out_dir.join("rkube-shim-target");
    let mut rustflags = vec!["-Ctarget-feature=+crt-static"];
    if target.contains("-linux-") {
        rustflags.push("-Crelocation-model=static");
    }
    let status = Command::new(var("CARGO"))
        .arg("build")
        .arg("--manifest-path")
        .arg(shim.join("Cargo.toml"))
        .args([
            "--bin",
            "rkube-shim",
            "--profile",
            "lean-helper",
            "--locked",
        ])
        .arg("--offline")
        .args(["--target", &target])
        .arg("--target-dir")
        .arg(&target_dir)
        // Our flags only, whatever this build was given (they would apply to our target too).
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags.join("\x1f"))
        .env_remove("RUSTFLAGS")
        // A workspace wrapper (clippy's driver during `cargo clippy`) is for this build's
        // workspace crates, not for building an artifact.
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .unwrap_or_else(|e| fail(&format!("running cargo: {e}")));
    if !status.success() {
        fail(&format!("cargo build of crates/shim failed ({status})"));
    }
    let built = target_dir
        .join(&target)
        .join("lean-helper")
        .join("rkube-shim");
    let exe = out_dir.join("rkube-shim");
    std::fs::copy(&built, &exe).unwrap_or_else(|e| {
        fail(&format!(
            "copying {} to {}: {e}",
            built.display(),
            exe.display()
        ))
    });
    exe
}
