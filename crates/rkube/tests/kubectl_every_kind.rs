//! One manifest with an object of every kind rkube serves (and a custom resource), through real
//! kubectl: apply creates them all, applying again leaves every one `unchanged`, a change to
//! each is `configured` (after `diff` shows it), each kind lists with its columns, and delete
//! removes them all.

mod common;

use common::{Apiserver, kubectl, kubectls, stderr, stdout, write};

const EVERY_KIND: &str = r#"apiVersion: v1
kind: Namespace
metadata: {name: every, labels: {v: "1"}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm, namespace: every, labels: {v: "1"}}
data: {a: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: secret, namespace: every, labels: {v: "1"}}
data: {password: czNjcmV0}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: sa, namespace: every, labels: {v: "1"}}
---
apiVersion: v1
kind: Pod
metadata: {name: pod, namespace: every, labels: {v: "1", app: web}}
spec:
  containers:
  - {name: c, image: busybox, command: [sleep, "3600"], ports: [{containerPort: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: every, labels: {v: "1"}}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: manual, namespace: every, labels: {v: "1"}}
subsets: [{addresses: [{ip: 10.1.2.3}], ports: [{port: 80}]}]
---
apiVersion: v1
kind: Node
metadata: {name: every-node, labels: {v: "1"}}
spec: {podCIDR: 10.42.9.0/24}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv, labels: {v: "1"}}
spec: {capacity: {storage: 1Gi}, accessModes: [ReadWriteOnce], hostPath: {path: /tmp/every-pv}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: pvc, namespace: every, labels: {v: "1"}}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Event
metadata: {name: ev, namespace: every, labels: {v: "1"}}
involvedObject: {kind: Pod, name: pod, namespace: every}
reason: Testing
message: an event
type: Normal
---
apiVersion: v1
kind: LimitRange
metadata: {name: lr, namespace: every, labels: {v: "1"}}
spec: {limits: [{type: Container, default: {cpu: 500m}}]}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: rq, namespace: every, labels: {v: "1"}}
spec: {hard: {pods: "10"}}
---
apiVersion: v1
kind: ReplicationController
metadata: {name: rc, namespace: every, labels: {v: "1"}}
spec:
  replicas: 0
  selector: {app: rc}
  template:
    metadata: {labels: {app: rc}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: v1
kind: PodTemplate
metadata: {name: pt, namespace: every, labels: {v: "1"}}
template:
  metadata: {labels: {app: pt}}
  spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: deploy, namespace: every, labels: {v: "1"}}
spec:
  replicas: 0
  selector: {matchLabels: {app: deploy}}
  template:
    metadata: {labels: {app: deploy}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: rs, namespace: every, labels: {v: "1"}}
spec:
  replicas: 0
  selector: {matchLabels: {app: rs}}
  template:
    metadata: {labels: {app: rs}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sts, namespace: every, labels: {v: "1"}}
spec:
  replicas: 0
  serviceName: svc
  selector: {matchLabels: {app: sts}}
  template:
    metadata: {labels: {app: sts}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: ds, namespace: every, labels: {v: "1"}}
spec:
  selector: {matchLabels: {app: ds}}
  template:
    metadata: {labels: {app: ds}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: ControllerRevision
metadata: {name: cr, namespace: every, labels: {v: "1"}}
revision: 1
data: {spec: {template: {}}}
---
apiVersion: batch/v1
kind: Job
metadata: {name: job, namespace: every, labels: {v: "1"}}
spec:
  suspend: true
  template:
    spec: {restartPolicy: Never, containers: [{name: c, image: busybox, command: ["true"]}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: cron, namespace: every, labels: {v: "1"}}
spec:
  schedule: "*/5 * * * *"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec: {restartPolicy: Never, containers: [{name: c, image: busybox, command: ["true"]}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: hpa, namespace: every, labels: {v: "1"}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: deploy}
  minReplicas: 1
  maxReplicas: 3
  metrics: [{type: Resource, resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}}]
---
apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata: {name: hpa-v1, namespace: every, labels: {v: "1"}}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: deploy}
  maxReplicas: 3
  targetCPUUtilizationPercentage: 70
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: ic, labels: {v: "1"}}
spec: {controller: example.com/ingress}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: ing, namespace: every, labels: {v: "1"}}
spec:
  ingressClassName: ic
  rules:
  - host: web.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: svc, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: every, labels: {v: "1"}}
spec: {podSelector: {matchLabels: {app: web}}, policyTypes: [Ingress]}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: sc, labels: {v: "1"}}
provisioner: example.com/hostpath
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: csi.example.com, labels: {v: "1"}}
spec: {attachRequired: false}
---
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {name: va, labels: {v: "1"}}
spec: {attacher: csi.example.com, nodeName: every-node, source: {persistentVolumeName: pv}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: role, namespace: every, labels: {v: "1"}}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: every-clusterrole, labels: {v: "1"}}
rules: [{apiGroups: [""], resources: [nodes], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: rb, namespace: every, labels: {v: "1"}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: role}
subjects: [{kind: ServiceAccount, name: sa, namespace: every}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: every-crb, labels: {v: "1"}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: every-clusterrole}
subjects: [{kind: User, name: alice, apiGroup: rbac.authorization.k8s.io}]
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: lease, namespace: every, labels: {v: "1"}}
spec: {holderIdentity: me, leaseDurationSeconds: 15}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: slice, namespace: every, labels: {v: "1"}}
addressType: IPv4
endpoints: [{addresses: [10.1.2.3]}]
ports: [{port: 80, protocol: TCP}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: pdb, namespace: every, labels: {v: "1"}}
spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: every-priority, labels: {v: "1"}}
value: 1000
---
apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: ev2, namespace: every, labels: {v: "1"}}
eventTime: "2024-01-01T00:00:00.000000Z"
reportingController: example.com/ctl
reportingInstance: ctl-1
action: Testing
reason: Testing
type: Normal
note: another event
regarding: {kind: Pod, name: pod, namespace: every}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: gizmos.example.com, labels: {v: "1"}}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gizmos, kind: Gizmo}
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, properties: {spec: {type: object, properties: {size: {type: integer}}}}}}
"#;

const GIZMO: &str = r#"apiVersion: example.com/v1
kind: Gizmo
metadata: {name: gizmo, namespace: every, labels: {v: "1"}}
spec: {size: 1}
"#;

/// Kinds as `kubectl get` names them, for listing each.
const RESOURCES: &[&str] = &[
    "configmaps",
    "secrets",
    "serviceaccounts",
    "pods",
    "services",
    "endpoints",
    "pvc",
    "events",
    "limitranges",
    "resourcequotas",
    "rc",
    "podtemplates",
    "deployments",
    "replicasets",
    "statefulsets",
    "daemonsets",
    "controllerrevisions",
    "jobs",
    "cronjobs",
    "hpa",
    "ingresses",
    "networkpolicies",
    "roles",
    "rolebindings",
    "leases",
    "endpointslices",
    "pdb",
    "gizmos",
];
const CLUSTER_RESOURCES: &[&str] = &[
    "namespaces",
    "nodes",
    "pv",
    "ingressclasses",
    "storageclasses",
    "csidrivers",
    "volumeattachments",
    "clusterroles",
    "clusterrolebindings",
    "priorityclasses",
    "crds",
];

#[test]
fn one_manifest_of_every_kind_applies_reapplies_changes_and_deletes() {
    for bin in kubectls() {
        let server = Apiserver::start();
        let kc = server.kubeconfig();
        let k = |args: &[&str]| kubectl(&bin, &kc, args);
        let who = bin.display().to_string();
        let dir = server.dir.path();
        let manifest = write(dir, "every.yaml", EVERY_KIND);
        let objects = EVERY_KIND.matches("\nkind: ").count();

        let out = k(&["apply", "-f", &manifest]);
        assert!(
            out.status.success(),
            "{who}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert_eq!(
            stdout(&out).matches(" created").count(),
            objects,
            "{who}: {}",
            stdout(&out)
        );
        let out = k(&[
            "wait",
            "--for=condition=Established",
            "crd/gizmos.example.com",
            "--timeout=10s",
        ]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let gizmo = write(dir, "gizmo.yaml", GIZMO);
        let out = k(&["apply", "-f", &gizmo]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));

        // Again: nothing changes.
        let out = k(&["apply", "-f", &manifest, "-f", &gizmo]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        // kubectl's strategic patch always carries a field whose patch strategy is `replace`
        // (a PodDisruptionBudget's selector), so kube-apiserver too sees it `configured`.
        let changed: Vec<&&str> = lines
            .iter()
            .filter(|l| !l.ends_with(" unchanged") && !l.starts_with("poddisruptionbudget"))
            .collect();
        assert!(changed.is_empty(), "{who}: not unchanged: {changed:?}");
        assert_eq!(lines.len(), objects + 1, "{who}");

        // A label changed on every object: diff shows it, apply configures each.
        let changed_manifest = EVERY_KIND.replace("labels: {v: \"1\"", "labels: {v: \"2\"");
        let changed_gizmo = GIZMO.replace("v: \"1\"", "v: \"2\"");
        let manifest2 = write(dir, "every2.yaml", &changed_manifest);
        let gizmo2 = write(dir, "gizmo2.yaml", &changed_gizmo);
        let out = k(&["diff", "-f", &manifest2, "-f", &gizmo2]);
        assert_eq!(out.status.code(), Some(1), "{who}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("+    v: \"2\""),
            "{who}: {}",
            stdout(&out)
        );
        let out = k(&["apply", "-f", &manifest2, "-f", &gizmo2]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        let configured = stdout(&out).matches(" configured").count();
        assert_eq!(configured, objects + 1, "{who}: {}", stdout(&out));

        // Every kind lists, with its columns, and the label selector finds each object.
        for resource in RESOURCES {
            let out = k(&["get", resource, "-n", "every", "-l", "v=2", "-o", "name"]);
            assert!(
                out.status.success(),
                "{who}: get {resource}: {}",
                stderr(&out)
            );
            assert_eq!(
                stdout(&out).lines().count(),
                if *resource == "events" || *resource == "hpa" {
                    2
                } else {
                    1
                },
                "{who}: get {resource}: {}",
                stdout(&out)
            );
            let out = k(&["get", resource, "-n", "every", "-o", "wide"]);
            let text = stdout(&out);
            let header = text.lines().next().unwrap_or_default();
            assert!(
                out.status.success() && header.contains("NAME") && header == header.to_uppercase(),
                "{who}: get {resource}: {text}{}",
                stderr(&out)
            );
        }
        for resource in CLUSTER_RESOURCES {
            let out = k(&["get", resource, "-l", "v=2", "-o", "name"]);
            assert!(
                out.status.success(),
                "{who}: get {resource}: {}",
                stderr(&out)
            );
            assert_eq!(
                stdout(&out).lines().count(),
                1,
                "{who}: get {resource}: {}",
                stdout(&out)
            );
        }

        let out = k(&["delete", "-f", &gizmo2, "-f", &manifest2, "--wait=false"]);
        assert!(out.status.success(), "{who}: {}", stderr(&out));
        assert_eq!(
            stdout(&out).matches(" deleted").count(),
            objects + 1,
            "{who}: {}",
            stdout(&out)
        );
    }
}
