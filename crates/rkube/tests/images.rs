//! End-to-end tests of `rkube images`: the real binary against a real registry on loopback
//! (Debian's `docker-registry`), with archives written by a real peer (`skopeo`).

mod common;

use common::{assert_clean_failure, stderr, stdout};
use std::path::Path;
use std::process::{Command, Output};

use rkube_testsupport::registry::{Layout, Registry, busybox_entries};

fn images(data_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rkube"))
        .arg("images")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .expect("run rkube")
}

#[test]
fn pull_list_import_and_remove_images() {
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&work.path().join("busybox"));
    let layer = layout.layer(&busybox_entries(&["sh", "true"]));
    layout.image(
        rkube_runtime::image::pull::this_platform().1,
        &[layer],
        serde_json::json!({"Cmd": ["sh"]}),
    );
    registry.push(&layout.finish(), "library/busybox:1.0");
    let host = registry.host();
    let name = format!("{host}/library/busybox:1.0");

    let data = work.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The registry speaks HTTP, which registries.yaml must allow for it.
    std::fs::write(
        data.join("registries.yaml"),
        format!("mirrors:\n  \"{host}\":\n    endpoint:\n      - \"http://{host}\"\n"),
    )
    .unwrap();

    let out = images(&data, &["pull", &name]);
    assert!(out.status.success(), "pull: {}", stderr(&out));
    assert!(stdout(&out).contains(&format!("pulled {name}")));
    let out = images(&data, &["ls"]);
    let listing = stdout(&out);
    assert!(
        listing.contains(&format!("{host}/library/busybox")) && listing.contains("1.0"),
        "{listing}"
    );

    // Archives written by skopeo, in both formats, import under their names.
    let oci = work.path().join("busybox-oci.tar");
    let docker = work.path().join("busybox-docker.tar");
    for dest in [
        format!("oci-archive:{}:example.com/oci/busybox:2.0", oci.display()),
        format!(
            "docker-archive:{}:example.com/docker/busybox:3.0",
            docker.display()
        ),
    ] {
        let copied = Command::new("skopeo")
            .args([
                "copy",
                "--quiet",
                "--src-tls-verify=false",
                "--insecure-policy",
            ])
            .arg(format!("docker://{name}"))
            .arg(&dest)
            .output()
            .expect("skopeo");
        assert!(copied.status.success(), "{}", stderr(&copied));
    }
    let out = images(
        &data,
        &["import", oci.to_str().unwrap(), docker.to_str().unwrap()],
    );
    assert!(out.status.success(), "import: {}", stderr(&out));
    let listing = stdout(&images(&data, &["ls"]));
    assert!(listing.contains("example.com/docker/busybox"), "{listing}");
    let ids = stdout(&images(&data, &["ls", "-q"]));
    assert_eq!(ids.lines().count(), 3, "{ids}");

    // Removing every name deletes the blobs too.
    let blobs = data.join("agent/images/blobs/sha256");
    assert!(std::fs::read_dir(&blobs).unwrap().count() > 0);
    let mut args = vec!["rm", name.as_str()];
    let everything: Vec<String> = stdout(&images(&data, &["ls"]))
        .lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.len() >= 2 && !cols[0].contains(&host))
                .then(|| format!("{}:{}", cols[0], cols[1]))
        })
        .collect();
    args.extend(everything.iter().map(String::as_str));
    let out = images(&data, &args);
    assert!(out.status.success(), "rm: {}", stderr(&out));
    assert_eq!(stdout(&images(&data, &["ls", "-q"])), "");
    assert_eq!(std::fs::read_dir(&blobs).unwrap().count(), 0);
}

#[test]
fn bad_input_is_one_clear_error_line() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");

    let out = images(&data, &["import", "/nonexistent/archive.tar"]);
    assert_clean_failure(&out, &["/nonexistent/archive.tar"]);

    let junk = work.path().join("junk.tar");
    std::fs::write(&junk, b"this is not a tar archive at all".repeat(100)).unwrap();
    let out = images(&data, &["import", junk.to_str().unwrap()]);
    assert_clean_failure(&out, &["junk.tar"]);

    let out = images(&data, &["rm", "never-pulled:1"]);
    assert_clean_failure(&out, &["no such image", "never-pulled:1"]);

    // A registry nothing listens on, allowed over HTTP: unreachable, named.
    let dead = format!("127.0.0.1:{}", rkube_testsupport::free_port());
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("registries.yaml"),
        format!("mirrors:\n  \"{dead}\":\n    endpoint: [\"http://{dead}\"]\n"),
    )
    .unwrap();
    let out = images(&data, &["pull", &format!("{dead}/app:1")]);
    assert_clean_failure(&out, &["unreachable", &dead]);

    std::fs::write(data.join("registries.yaml"), "mirrors: [oops").unwrap();
    let out = images(&data, &["pull", "anything"]);
    assert_clean_failure(&out, &["registries.yaml"]);

    std::fs::remove_file(data.join("registries.yaml")).unwrap();
    let out = images(&data, &["pull", "UPPER CASE"]);
    assert_clean_failure(&out, &["invalid image name"]);
}
