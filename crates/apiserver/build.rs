//! Compiles the vendored Kubernetes `.proto` files (`proto/`) into one descriptor set that
//! `src/protobuf` loads at run time: the protobuf wire format is decoded from the descriptors,
//! not from generated Rust types (see that module for why). Needs `protoc` (Debian
//! `protobuf-compiler`, already required by the CRI crates), or `PROTOC` naming it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Read when the script runs, not baked in when it is compiled: a target directory shared
    // by two checkouts reuses one compiled script for both.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest).join("proto");
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut files = Vec::new();
    collect(&root, &mut files);
    files.sort();
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"))
        .join("k8s-descriptors.pb");
    let protoc = std::env::var_os("PROTOC").unwrap_or_else(|| "protoc".into());
    let result = Command::new(&protoc)
        .arg("-I")
        .arg(&root)
        .arg("--include_imports")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {protoc:?} (install protobuf-compiler): {e}"));
    // protoc warns about unused imports in upstream's files; only failures matter.
    if !result.status.success() {
        panic!(
            "protoc failed on {}: {}",
            root.display(),
            String::from_utf8_lossy(&result.stderr)
        );
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("readable proto directory").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
}
