//! CustomResourceDefinitions with real kubectl against `rkube apiserver`: a CRD is served
//! within a second (discovery, printer columns, categories, short names), its custom resources
//! are defaulted and validated from the schema (422 naming the field), have `status` and
//! `scale` subresources, refuse strategic merge patch as upstream does, survive a restart, and
//! go when their CRD is deleted. Name conflicts between CRDs and invalid CRDs are refused.

mod common;

use std::time::{Duration, Instant};

use common::{Apiserver, json, kubectl, kubectls, stderr, stdout, write};
use serde_json::Value;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas, labelSelectorPath: .status.selector}
    additionalPrinterColumns:
    - {name: Spec, type: string, jsonPath: .spec.cronSpec}
    - {name: Replicas, type: integer, jsonPath: .spec.replicas}
    - {name: Ready, type: string, jsonPath: '.status.conditions[?(@.type=="Ready")].status', priority: 1}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            properties:
              cronSpec: {type: string, pattern: '^(\S+\s+){4}\S+$'}
              image: {type: string, maxLength: 40}
              replicas: {type: integer, minimum: 1, default: 1}
          status:
            type: object
            properties:
              replicas: {type: integer}
              selector: {type: string}
              conditions:
                type: array
                items:
                  type: object
                  properties:
                    type: {type: string}
                    status: {type: string}
"#;

const CRON: &str = r#"apiVersion: stable.example.com/v1
kind: CronTab
metadata: {name: my-cron}
spec: {cronSpec: "* * * * */5", image: my-cron-image}
"#;

const BAD_CRON: &str = r#"apiVersion: stable.example.com/v1
kind: CronTab
metadata: {name: bad-cron}
spec: {image: 5, replicas: 0}
"#;

#[test]
fn a_crd_serves_custom_resources_to_real_kubectl() {
    for bin in kubectls() {
        let server = Apiserver::start();
        let kc = server.kubeconfig();
        let k = |args: &[&str]| kubectl(&bin, &kc, args);
        let dir = server.dir.path();
        let crd = write(dir, "crd.yaml", CRD);
        let cron = write(dir, "cron.yaml", CRON);
        let who = bin.display().to_string();

        let out = k(&["apply", "-f", &crd]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        assert!(
            server.served_within(
                "/apis/stable.example.com/v1/crontabs",
                Duration::from_secs(1)
            ),
            "{who}: the CRD's resource was not served within a second"
        );
        let out = k(&[
            "wait",
            "--for=condition=Established",
            "crd/crontabs.stable.example.com",
            "--timeout=10s",
        ]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let out = k(&["api-resources", "--api-group=stable.example.com"]);
        let listed = stdout(&out);
        let line = listed
            .lines()
            .find(|l| l.starts_with("crontabs"))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_default();
        assert_eq!(
            line,
            ["crontabs", "ct", "stable.example.com/v1", "true", "CronTab"],
            "{who}: {}",
            stdout(&out)
        );

        // Created, defaulted (replicas 1), shown with the CRD's columns; applied again: unchanged.
        let out = k(&["apply", "-f", &cron]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        assert!(stdout(&out).contains("crontab.stable.example.com/my-cron created"));
        let out = k(&["apply", "-f", &cron]);
        assert!(
            stdout(&out).contains("unchanged"),
            "{who}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let out = k(&["get", "ct"]);
        let text = stdout(&out);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines[0],
            ["NAME", "SPEC", "REPLICAS", "AGE"],
            "{who}: {text}"
        );
        assert_eq!(
            lines[1][..7],
            ["my-cron", "*", "*", "*", "*", "*/5", "1"],
            "{who}: {text}"
        );
        assert!(lines[1][7].ends_with('s'), "{who}: age {text}");
        let out = k(&["get", "crontabs", "-o", "wide"]);
        assert!(
            stdout(&out)
                .lines()
                .next()
                .unwrap_or_default()
                .contains("READY"),
            "{who}: {}",
            stdout(&out)
        );
        let out = k(&["get", "all"]);
        assert!(
            stdout(&out).contains("crontab.stable.example.com/my-cron"),
            "{who}: {}",
            stdout(&out)
        );
        let out = k(&["explain", "crontab.spec"]);
        assert!(
            stdout(&out).contains("cronSpec"),
            "{who}: {}{}",
            stdout(&out),
            stderr(&out)
        );

        // Invalid: every problem named by its field, as upstream words them.
        let bad = write(dir, "bad.yaml", BAD_CRON);
        let out = k(&["apply", "-f", &bad]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{who}: invalid CR accepted");
        assert!(
            err.contains(r#"The CronTab "bad-cron" is invalid"#),
            "{who}: {err}"
        );
        assert!(
            err.contains("spec.cronSpec: Required value"),
            "{who}: {err}"
        );
        assert!(
            err.contains(r#"spec.image: Invalid value: "integer": spec.image in body must be of type string: "integer""#),
            "{who}: {err}"
        );
        assert!(
            err.contains("spec.replicas: Invalid value: 0: should be greater than or equal to 1"),
            "{who}: {err}"
        );
        let unknown = write(
            dir,
            "unknown.yaml",
            &CRON.replace("image:", "colour: red, image:"),
        );
        let out = k(&["apply", "-f", &unknown]);
        assert!(
            stderr(&out).contains(r#"unknown field "spec.colour""#),
            "{who}: {}",
            stderr(&out)
        );

        // scale, status, and the patch types a custom resource takes.
        let out = k(&["scale", "ct", "my-cron", "--replicas=3"]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let out = k(&["get", "ct", "my-cron", "-o", "jsonpath={.spec.replicas}"]);
        assert_eq!(stdout(&out), "3", "{who}");
        let out = k(&[
            "patch",
            "ct",
            "my-cron",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":2,"selector":"app=cron","conditions":[{"type":"Ready","status":"True"}]}}"#,
        ]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let scale = json(&server.curl(
            &["/apis/stable.example.com/v1/namespaces/default/crontabs/my-cron/scale"],
            true,
        ));
        assert_eq!(scale["spec"]["replicas"], 3, "{scale}");
        assert_eq!(scale["status"]["replicas"], 2, "{scale}");
        assert_eq!(scale["status"]["selector"], "app=cron", "{scale}");
        let out = k(&["get", "ct", "-o", "wide"]);
        assert!(stdout(&out).contains("True"), "{who}: {}", stdout(&out));
        let out = k(&[
            "patch",
            "ct",
            "my-cron",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":"two"}}"#,
        ]);
        assert!(
            stderr(&out).contains(r#"status.replicas: Invalid value: "string""#),
            "{who}: {}",
            stderr(&out)
        );
        // A main-resource write does not change status.
        let out = k(&[
            "patch",
            "ct",
            "my-cron",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":9}}"#,
        ]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let out = k(&["get", "ct", "my-cron", "-o", "jsonpath={.status.replicas}"]);
        assert_eq!(stdout(&out), "2", "{who}");
        let out = k(&["patch", "ct", "my-cron", "-p", r#"{"spec":{"image":"x"}}"#]);
        assert!(
            stderr(&out).contains("application/strategic-merge-patch+json is not supported"),
            "{who}: {}",
            stderr(&out)
        );
        let out = k(&[
            "patch",
            "ct",
            "my-cron",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/spec/image","value":"y"}]"#,
        ]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let applied = write(dir, "ssa.yaml", &CRON.replace("my-cron-image", "ssa-image"));
        let out = k(&["apply", "--server-side", "-f", &applied]);
        assert!(
            !out.status.success() && stderr(&out).contains("conflict"),
            "{who}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let out = k(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &applied,
        ]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let out = k(&[
            "get",
            "ct",
            "my-cron",
            "-o",
            "jsonpath={.spec.image} {.metadata.generation}",
        ]);
        let text = stdout(&out);
        assert!(text.starts_with("ssa-image "), "{who}: {text}");

        // Deleting the CRD deletes its objects (in every namespace) and stops serving them.
        let out = k(&["create", "namespace", "team"]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let out = k(&["apply", "-n", "team", "-f", &cron]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let out = k(&[
            "delete",
            "crd",
            "crontabs.stable.example.com",
            "--timeout=20s",
        ]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let out = k(&["get", "crd", "-o", "name"]);
        assert_eq!(stdout(&out), "", "{who}");
        assert_eq!(
            server.status_of("/apis/stable.example.com/v1/crontabs"),
            "404",
            "{who}"
        );
        let left = json(&server.curl(&["/api/v1/namespaces/team"], true));
        assert_eq!(left["metadata"]["name"], "team");
        // The same CRD again starts empty.
        let out = k(&["apply", "-f", &crd]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        assert!(server.served_within(
            "/apis/stable.example.com/v1/crontabs",
            Duration::from_secs(1)
        ));
        let list = json(&server.curl(&["/apis/stable.example.com/v1/crontabs"], true));
        assert_eq!(list["items"], serde_json::json!([]), "{list}");
    }
}

fn condition<'a>(crd: &'a Value, kind: &str) -> &'a Value {
    crd["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[test]
fn crds_survive_a_restart_and_bad_or_conflicting_crds_are_refused() {
    let mut server = Apiserver::start();
    let post = |server: &Apiserver, path: &str, body: &str| {
        server.send("POST", path, "application/yaml", body)
    };
    let crd = post(
        &server,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        CRD,
    );
    assert_eq!(
        crd["metadata"]["name"], "crontabs.stable.example.com",
        "{crd}"
    );
    assert_eq!(crd["spec"]["names"]["singular"], "crontab", "{crd}");
    assert_eq!(crd["spec"]["names"]["listKind"], "CronTabList", "{crd}");
    assert!(server.served_within(
        "/apis/stable.example.com/v1/crontabs",
        Duration::from_secs(1)
    ));
    let cron = post(
        &server,
        "/apis/stable.example.com/v1/namespaces/default/crontabs",
        CRON,
    );
    assert_eq!(cron["spec"]["replicas"], 1, "{cron}");
    assert_eq!(cron["metadata"]["generation"], 1, "{cron}");

    // An invalid CR through the API: 422 with causes naming the fields.
    let bad = post(
        &server,
        "/apis/stable.example.com/v1/namespaces/default/crontabs",
        BAD_CRON,
    );
    assert_eq!(bad["code"], 422, "{bad}");
    assert_eq!(bad["reason"], "Invalid", "{bad}");
    assert_eq!(bad["details"]["group"], "stable.example.com", "{bad}");
    assert_eq!(bad["details"]["kind"], "CronTab", "{bad}");
    let fields: Vec<&str> = bad["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["spec.cronSpec", "spec.image", "spec.replicas"],
        "{bad}"
    );
    let strategic = server.send(
        "PATCH",
        "/apis/stable.example.com/v1/namespaces/default/crontabs/my-cron",
        "application/strategic-merge-patch+json",
        r#"{"spec":{"image":"x"}}"#,
    );
    assert_eq!(strategic["code"], 415, "{strategic}");

    // Invalid CRDs.
    let nameless = post(
        &server,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &CRD.replace(
            "name: crontabs.stable.example.com",
            "name: crontab.stable.example.com",
        ),
    );
    assert_eq!(nameless["code"], 422, "{nameless}");
    assert!(
        nameless["message"]
            .as_str()
            .unwrap()
            .contains(r#"metadata.name: Invalid value: "crontab.stable.example.com": must be spec.names.plural+"."+spec.group"#),
        "{nameless}"
    );
    let schemaless = post(
        &server,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: things.example.com}\nspec: {group: example.com, scope: Cluster, names: {plural: things, kind: Thing}, versions: [{name: v1, served: true, storage: true}]}\n",
    );
    assert!(
        schemaless["message"].as_str().unwrap_or_default().contains(
            "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required"
        ),
        "{schemaless}"
    );

    // A second CRD of the group that wants the same kind is not accepted and not served.
    let rival = CRD
        .replace(
            "crontabs.stable.example.com",
            "crontabs2.stable.example.com",
        )
        .replace(
            "plural: crontabs",
            "plural: crontabs2\n    singular: crontab2",
        )
        .replace("shortNames: [ct]", "shortNames: [ct2]");
    let rival = post(
        &server,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &rival,
    );
    assert_eq!(
        rival["metadata"]["name"], "crontabs2.stable.example.com",
        "{rival}"
    );
    let started = Instant::now();
    let rival = loop {
        let got = json(&server.curl(
            &["/apis/apiextensions.k8s.io/v1/customresourcedefinitions/crontabs2.stable.example.com"],
            true,
        ));
        if !condition(&got, "NamesAccepted").is_null() || started.elapsed() > Duration::from_secs(5)
        {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        condition(&rival, "NamesAccepted")["status"],
        "False",
        "{rival}"
    );
    assert_eq!(
        condition(&rival, "NamesAccepted")["reason"],
        "KindConflict",
        "{rival}"
    );
    assert_eq!(
        condition(&rival, "Established")["status"],
        "False",
        "{rival}"
    );
    assert_eq!(
        server.status_of("/apis/stable.example.com/v1/crontabs2"),
        "404"
    );

    // A cluster-scoped CRD with a schema that keeps unknown fields under spec.
    let cluster = post(
        &server,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: things.example.com}\nspec: {group: example.com, scope: Cluster, names: {plural: things, kind: Thing}, versions: [{name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, properties: {spec: {type: object, x-kubernetes-preserve-unknown-fields: true}}}}}]}\n",
    );
    assert_eq!(cluster["spec"]["scope"], "Cluster", "{cluster}");
    assert!(server.served_within("/apis/example.com/v1/things", Duration::from_secs(1)));
    let thing = post(
        &server,
        "/apis/example.com/v1/things",
        "apiVersion: example.com/v1\nkind: Thing\nmetadata: {name: one}\nspec: {anything: [1, {a: b}]}\n",
    );
    assert_eq!(thing["spec"]["anything"][1]["a"], "b", "{thing}");

    // After a restart the CRDs are served as soon as the server is ready.
    server.restart();
    let got = json(&server.curl(
        &["/apis/stable.example.com/v1/namespaces/default/crontabs/my-cron"],
        true,
    ));
    assert_eq!(got["spec"]["cronSpec"], "* * * * */5", "{got}");
    let ready = server.curl(&["/readyz?verbose"], true);
    assert!(
        stdout(&ready).contains("[+]poststarthook/crd-informer-synced ok"),
        "{}",
        stdout(&ready)
    );
    let thing = json(&server.curl(&["/apis/example.com/v1/things/one"], true));
    assert_eq!(thing["metadata"]["name"], "one", "{thing}");
}
