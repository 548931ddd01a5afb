//! The garbage collector and namespace controller (`rkube controller-manager`, a separate
//! process here, an API client of `rkube apiserver`), driven by the real kubectl:
//! `delete --cascade=background|orphan|foreground`, dangling owner references, and
//! `delete namespace` emptying the namespace first.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Apiserver, kubectl, kubectls, rkube_bin, stderr, stdout};

struct ControllerManager(Child);

impl ControllerManager {
    fn start(server: &Apiserver) -> ControllerManager {
        let child = Command::new(rkube_bin())
            .args(["controller-manager", "--kubeconfig"])
            .arg(server.kubeconfig())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(server.dir.path().join("cm.log")).unwrap())
            .spawn()
            .expect("start rkube controller-manager");
        ControllerManager(child)
    }
}

impl Drop for ControllerManager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct K {
    bin: PathBuf,
    kc: PathBuf,
    dir: PathBuf,
}

impl K {
    fn run(&self, args: &[&str]) -> std::process::Output {
        kubectl(&self.bin, &self.kc, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} ({}): {}{}",
            self.bin.display(),
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    fn apply(&self, name: &str, text: &str) {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        self.ok(&["apply", "-f", &path.to_string_lossy()]);
    }

    fn uid(&self, args: &[&str]) -> String {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "jsonpath={.metadata.uid}"]);
        self.ok(&a)
    }

    fn exists(&self, args: &[&str]) -> bool {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        let out = self.run(&a);
        if out.status.success() {
            return true;
        }
        assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));
        false
    }

    /// Waits (bounded, generous: the machine is shared) until `check` holds.
    fn eventually(&self, what: &str, mut check: impl FnMut() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{what} did not happen within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn owned_cm(name: &str, owner: &str, uid: &str, block: bool) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: {owner}\n    uid: {uid}\n    blockOwnerDeletion: {block}\n"
    )
}

fn cm(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
}

fn scenario(k: &K) {
    // Background (kubectl's default): the dependent goes after its owner.
    k.apply("o1.yaml", &cm("owner1"));
    let uid = k.uid(&["cm", "owner1"]);
    k.apply("d1.yaml", &owned_cm("dep1", "owner1", &uid, false));
    k.ok(&["delete", "cm", "owner1"]);
    k.eventually("background collection of dep1", || {
        !k.exists(&["cm", "dep1"])
    });

    // A reference to an owner that never existed (or was re-created) is dangling.
    k.apply("o2.yaml", &cm("owner2"));
    k.apply(
        "d2.yaml",
        &owned_cm(
            "dep2",
            "owner2",
            "00000000-0000-0000-0000-000000000000",
            false,
        ),
    );
    k.eventually("collection of a dangling dependent", || {
        !k.exists(&["cm", "dep2"])
    });
    assert!(k.exists(&["cm", "owner2"]), "the unrelated owner2 stays");

    // Orphan: kubectl waits until the owner is gone; the dependent stays, unowned.
    k.apply("o3.yaml", &cm("owner3"));
    let uid = k.uid(&["cm", "owner3"]);
    k.apply("d3.yaml", &owned_cm("dep3", "owner3", &uid, true));
    k.ok(&[
        "delete",
        "cm",
        "owner3",
        "--cascade=orphan",
        "--timeout=60s",
    ]);
    assert!(!k.exists(&["cm", "owner3"]));
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "dep3",
            "-o",
            "jsonpath={.metadata.ownerReferences}"
        ]),
        ""
    );

    // Foreground: the owner waits for its blocking dependents, the whole tree goes.
    k.apply("o4.yaml", &cm("owner4"));
    let uid = k.uid(&["cm", "owner4"]);
    k.apply("m4.yaml", &owned_cm("mid4", "owner4", &uid, true));
    let mid = k.uid(&["cm", "mid4"]);
    let mut leaf = owned_cm("leaf4", "mid4", &mid, true);
    leaf.push_str("  finalizers: [example.com/hold]\n");
    k.apply("l4.yaml", &leaf);
    k.ok(&[
        "delete",
        "cm",
        "owner4",
        "--cascade=foreground",
        "--wait=false",
    ]);
    k.eventually("the leaf marked for deletion", || {
        !k.ok(&[
            "get",
            "cm",
            "leaf4",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .is_empty()
    });
    // The held leaf blocks mid4, which blocks owner4.
    assert_eq!(
        k.ok(&[
            "get",
            "cm",
            "owner4",
            "-o",
            "jsonpath={.metadata.finalizers}"
        ]),
        r#"["foregroundDeletion"]"#
    );
    assert!(k.exists(&["cm", "mid4"]));
    k.ok(&[
        "patch",
        "cm",
        "leaf4",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    k.ok(&[
        "wait",
        "--for=delete",
        "cm/owner4",
        "cm/mid4",
        "cm/leaf4",
        "--timeout=60s",
    ]);

    // A namespace is emptied before it goes; content with a finalizer holds it Terminating
    // with upstream's conditions.
    k.ok(&["create", "namespace", "gone"]);
    k.ok(&["create", "configmap", "plain", "-n", "gone"]);
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=busybox",
        "-n",
        "gone",
    ]);
    let mut held = cm("held");
    held.push_str("  namespace: gone\n  finalizers: [example.com/hold]\n");
    k.apply("held.yaml", &held);
    k.ok(&["delete", "namespace", "gone", "--wait=false"]);
    k.eventually("the namespace reporting what remains", || {
        k.ok(&[
            "get",
            "namespace",
            "gone",
            "-o",
            "jsonpath={.status.conditions[*].type}",
        ])
        .contains("NamespaceFinalizersRemaining")
    });
    assert_eq!(
        k.ok(&["get", "namespace", "gone", "-o", "jsonpath={.status.phase}"]),
        "Terminating"
    );
    assert!(!k.exists(&["cm", "plain", "-n", "gone"]));
    assert!(!k.exists(&["deployment", "web", "-n", "gone"]));
    // Creating in a terminating namespace is refused.
    let out = k.run(&["create", "configmap", "late", "-n", "gone"]);
    assert!(
        stderr(&out).contains("because it is being terminated"),
        "{}",
        stderr(&out)
    );
    k.ok(&[
        "patch",
        "cm",
        "held",
        "-n",
        "gone",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    k.ok(&["wait", "--for=delete", "namespace/gone", "--timeout=60s"]);
    // kubectl's own wait on a namespace delete returns once it is gone.
    k.ok(&["create", "namespace", "gone2"]);
    k.ok(&["create", "configmap", "x", "-n", "gone2"]);
    k.ok(&["delete", "namespace", "gone2", "--timeout=60s"]);
    assert!(!k.exists(&["namespace", "gone2"]));
}

fn kubectl_context(bin: &Path, server: &Apiserver) -> K {
    K {
        bin: bin.to_path_buf(),
        kc: server.kubeconfig(),
        dir: server.dir.path().to_path_buf(),
    }
}

#[test]
fn cascading_deletes_and_namespace_deletion_with_real_kubectl() {
    for bin in kubectls() {
        let server = Apiserver::start();
        let _cm = ControllerManager::start(&server);
        scenario(&kubectl_context(&bin, &server));
    }
}

#[test]
fn controller_manager_refuses_unknown_controllers() {
    let out = Command::new(rkube_bin())
        .args([
            "controller-manager",
            "--controllers",
            "garbagecollector,nope",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown controller \"nope\"") && err.contains("namespace"),
        "{err}"
    );
}
