//! The official Python client (PyPI `kubernetes`, installed by `scripts/clients` into a
//! virtualenv) against `rkube apiserver`: CRUD, selectors, pagination, watch resumption, 410.

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_python_client_works_unchanged() {
    let python = std::env::var_os("RKUBE_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/rkube-ci/clients"))
        .join("python/bin/python");
    if !python.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have installed the Python client at {} (scripts/clients)",
            python.display()
        );
        eprintln!("skipping: no Python client at {}", python.display());
        return;
    }
    let server = common::Apiserver::start();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_api.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(server.kubeconfig())
        .arg(server.dir.path().join("data"))
        .arg(env!("CARGO_BIN_EXE_rkube"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python client scenario failed:\n{}\n{}\napiserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(server.dir.path().join("apiserver.log")).unwrap_or_default()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("python client: ok"));
}
