"""The official Python client (PyPI `kubernetes`) against rkube: CRUD, selectors, pagination,
a watch resumed from a resourceVersion, and 410 Gone handled the way clients do it (re-list).

Usage: client_api.py KUBECONFIG DATA_DIR RKUBE_BINARY [DATASTORE_ENDPOINT]
"""

import subprocess
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

kubeconfig, data_dir, rkube = sys.argv[1:4]
endpoint = sys.argv[4] if len(sys.argv) > 4 else None
config.load_kube_config(config_file=kubeconfig)
v1 = client.CoreV1Api()
apps = client.AppsV1Api()
ns = "py-client"


def names(items):
    return [i.metadata.name for i in items]


def compact():
    # The running apiserver compacts its own store when asked, as `etcdctl compact` does.
    where = ["--datastore-endpoint", endpoint] if endpoint else ["--data-dir", data_dir]
    subprocess.check_call([rkube, "datastore", *where, "compact"], stdout=subprocess.DEVNULL)


# --- CRUD -----------------------------------------------------------------------------------
v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
for i in range(5):
    v1.create_namespaced_config_map(ns, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=f"cm-{i}", labels={"app": "py", "idx": str(i)}),
        data={"k": str(i)}))
cm = v1.read_namespaced_config_map("cm-0", ns)
assert cm.data == {"k": "0"}, cm.data
assert cm.metadata.uid and cm.metadata.resource_version and cm.metadata.creation_timestamp
cm.data["k"] = "replaced"
v1.replace_namespaced_config_map("cm-0", ns, cm)
assert v1.read_namespaced_config_map("cm-0", ns).data == {"k": "replaced"}
# A stale resourceVersion is a conflict.
try:
    v1.replace_namespaced_config_map("cm-0", ns, cm)
    raise AssertionError("stale update accepted")
except ApiException as e:
    assert e.status == 409, e
v1.patch_namespaced_config_map("cm-1", ns, [{"op": "replace", "path": "/data/k", "value": "p"}])
assert v1.read_namespaced_config_map("cm-1", ns).data == {"k": "p"}
try:
    v1.read_namespaced_config_map("missing", ns)
    raise AssertionError("missing object found")
except ApiException as e:
    assert e.status == 404, e

dep = apps.create_namespaced_deployment(ns, client.V1Deployment(
    metadata=client.V1ObjectMeta(name="web"),
    spec=client.V1DeploymentSpec(
        replicas=2,
        selector=client.V1LabelSelector(match_labels={"app": "web"}),
        template=client.V1PodTemplateSpec(
            metadata=client.V1ObjectMeta(labels={"app": "web"}),
            spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")])))))
assert dep.spec.strategy.type == "RollingUpdate", dep.spec.strategy
assert dep.metadata.generation == 1

# --- selectors and pagination -----------------------------------------------------------------
selected = v1.list_namespaced_config_map(ns, label_selector="app=py,idx in (1,2,3),idx!=2")
assert sorted(names(selected.items)) == ["cm-1", "cm-3"], names(selected.items)
by_field = v1.list_namespaced_config_map(ns, field_selector="metadata.name=cm-4")
assert names(by_field.items) == ["cm-4"]
seen, token, pages = [], None, 0
while True:
    page = v1.list_namespaced_config_map(ns, limit=2, _continue=token, label_selector="app=py")
    seen += names(page.items)
    pages += 1
    token = page.metadata._continue
    if not token:
        break
assert seen == [f"cm-{i}" for i in range(5)] and pages == 3, (seen, pages)

# --- watch resumed from a resourceVersion ---------------------------------------------------
rv = v1.list_namespaced_config_map(ns).metadata.resource_version
v1.delete_namespaced_config_map("cm-4", ns)
v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm-5")))
events = []
w = watch.Watch()
for event in w.stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10):
    events.append((event["type"], event["object"].metadata.name))
    if len(events) == 2:
        w.stop()
assert events == [("DELETED", "cm-4"), ("ADDED", "cm-5")], events

# --- 410 Gone: an old continue token and an old watch after compaction ------------------------
page = v1.list_namespaced_config_map(ns, limit=1)
old_token = page.metadata._continue
v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cm-6")))
compact()
try:
    v1.list_namespaced_config_map(ns, limit=1, _continue=old_token)
    raise AssertionError("expired continue token accepted")
except ApiException as e:
    assert e.status == 410, e
try:
    for _ in watch.Watch().stream(v1.list_namespaced_config_map, ns, resource_version=rv,
                                  timeout_seconds=5):
        pass
    raise AssertionError("watch from a compacted resourceVersion did not fail")
except ApiException as e:
    assert e.status == 410, e
# What clients do on 410: list again and watch from the fresh resourceVersion.
fresh = v1.list_namespaced_config_map(ns)
assert "cm-6" in names(fresh.items)
v1.delete_namespaced_config_map("cm-6", ns)
w = watch.Watch()
for event in w.stream(v1.list_namespaced_config_map, ns,
                      resource_version=fresh.metadata.resource_version, timeout_seconds=10):
    assert (event["type"], event["object"].metadata.name) == ("DELETED", "cm-6"), event
    w.stop()

# --- delete ---------------------------------------------------------------------------------
v1.delete_collection_namespaced_config_map(ns, label_selector="app=py")
left = names(v1.list_namespaced_config_map(ns).items)
assert left == ["cm-5"], left
print("python client: ok")
