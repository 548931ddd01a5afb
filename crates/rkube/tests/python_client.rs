//! The official Python client (PyPI `kubernetes`, installed by `scripts/clients` into a
//! virtualenv) against `rkube apiserver`: CRUD, selectors, pagination, watch resumption, 410.

mod common;

use std::path::PathBuf;
use std::process::Command;

/// The Python interpreter with the client installed, or `None` (outside CI) to skip.
fn python() -> Option<PathBuf> {
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
        return None;
    }
    Some(python)
}

fn run_scenario(python: &std::path::Path, server: &common::Apiserver, endpoint: Option<&str>) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/client_api.py");
    let out = Command::new(python)
        .arg(script)
        .arg(server.kubeconfig())
        .arg(server.dir.path().join("data"))
        .arg(env!("CARGO_BIN_EXE_rkube"))
        .args(endpoint)
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

#[test]
fn the_python_client_works_unchanged() {
    let Some(python) = python() else { return };
    let server = common::Apiserver::start();
    run_scenario(&python, &server, None);
}

/// The same scenario with the apiserver on a real etcd (`--datastore-endpoint`).
#[test]
fn the_python_client_works_unchanged_on_etcd() {
    let Some(python) = python() else { return };
    let etcd = rkube_testsupport::EtcdServer::start();
    let endpoint = etcd.endpoint();
    let server = common::Apiserver::start_with(&["--datastore-endpoint".into(), endpoint.clone()]);
    run_scenario(&python, &server, Some(&endpoint));
}
