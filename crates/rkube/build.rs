//! Links the `rkube` binary position-dependent (`-no-pie`), as Go links the Kubernetes and
//! containerd binaries. Every rkube process — the runtime, a shim per container, a holder per
//! pod — is this binary; as a PIE each one applies about 58,000 relative relocations at start,
//! reading a 1.4 MB relocation table and dirtying the 1 MB `.data.rel.ro` it points into:
//! measured 1.8 MiB more resident memory per process (BENCHMARKS.md, runtime). The price is
//! that the executable's own code is not address-randomised (libraries still are).

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
