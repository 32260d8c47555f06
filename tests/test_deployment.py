"""The deployment files in cluster/ are valid and run a command that exists, as it is spelled."""

from __future__ import annotations

import configparser
import copy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from pipeline.cli.main import _parser

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
K8S = CLUSTER / "k8s"
K8S_FILES = [
    "namespace.yaml", "pvc.yaml", "configmap-workflow.yaml", "dask-cluster.yaml",
    "nightly-cronjob.yaml", "networkpolicy.yaml", "servicemonitor.yaml", "kustomization.yaml",
]


def _aquila_args(argv: list[str]) -> list[str]:
    """The arguments after the ``aquila`` executable (wherever it is installed)."""
    at = next(i for i, a in enumerate(argv) if Path(a).name == "aquila")
    return argv[at + 1 :]


def _parses(args: list[str]):
    parsed = _parser().parse_args(args)  # exits (SystemExit) on an unknown command or option
    assert parsed.command == "nightly"
    return parsed


def _unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((CLUSTER / name).read_text())
    return unit


def test_systemd_service_and_timer():
    service = _unit("aquila-nightly.service")
    assert service["Service"]["Type"] == "oneshot"
    parsed = _parses(_aquila_args(shlex.split(service["Service"]["ExecStart"])))
    assert parsed.store is not None and parsed.no_progress
    assert service["Service"]["SuccessExitStatus"].split() == ["75"]  # busy is not a failure
    timer = _unit("aquila-nightly.timer")
    assert timer["Timer"]["Unit"] == "aquila-nightly.service"
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_crontab_line():
    lines = [
        line
        for line in (CLUSTER / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(lines) == 1
    fields = shlex.split(lines[0].split(">>")[0])
    minute, hour, dom, month, dow, *command = fields
    assert (minute, hour) == ("0", "3") and (dom, month, dow) == ("*", "*", "*")
    assert command[:2] == ["flock", "-n"]
    _parses(_aquila_args(command))


@pytest.mark.parametrize(
    "name",
    ["aquila-nightly.service", "aquila-nightly.timer", "crontab",
     *(f"k8s/{f}" for f in K8S_FILES)],
)
def test_deployment_files_exist(name):
    assert (CLUSTER / name).is_file()


def test_single_pod_cronjob_is_gone():
    """The LocalCluster-in-one-pod CronJob was replaced by cluster/k8s/."""
    assert not (CLUSTER / "k8s-cronjob.yaml").exists()


def test_help_documents_the_busy_exit_code():
    for args in (["--help"], ["nightly", "--help"]):
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.cli.main", *args],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "75 busy" in " ".join(out.split()), args


# --- Kubernetes (cluster/k8s/): structure only, no cluster. The operator's objects (the
# scheduler Service and pods a DaskCluster becomes) are rendered as the operator renders them,
# so names, labels and ports are checked across files as Kubernetes would resolve them.

EXPOSED = ("LoadBalancer", "NodePort")
CLUSTER_DOMAIN_SUFFIXES = ("", ".{ns}", ".{ns}.svc", ".{ns}.svc.cluster.local")


def _k8s_docs() -> list[dict]:
    docs = []
    for name in K8S_FILES:
        if name != "kustomization.yaml":
            docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    return docs


def _one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def _selects(selector: dict, labels: dict) -> bool:
    """A label selector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) on labels."""
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _operator_objects(cluster: dict) -> dict[str, dict]:
    """What the dask-kubernetes operator makes of a DaskCluster: its scheduler Service and the
    scheduler's and a worker's pod (labels as controller.py's build_* functions set them)."""
    name = cluster["metadata"]["name"]
    ns = cluster["metadata"].get("namespace")
    base = dict(cluster["metadata"].get("labels", {}))
    sched, work = cluster["spec"]["scheduler"], cluster["spec"]["worker"]
    s_labels = base | sched.get("metadata", {}).get("labels", {})
    w_labels = base | work.get("metadata", {}).get("labels", {})
    component = {"dask.org/cluster-name": name}
    service = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": f"{name}-scheduler", "namespace": ns,
                     "labels": s_labels | component | {"dask.org/component": "scheduler"}},
        "spec": sched["service"],
    }
    scheduler_pod = {
        "labels": s_labels | component | {"dask.org/component": "scheduler",
                                          "sidecar.istio.io/inject": "false"},
        "spec": sched["spec"],
    }
    worker_pod = {
        "labels": w_labels | component | {"dask.org/workergroup-name": f"{name}-default",
                                          "dask.org/component": "worker",
                                          "sidecar.istio.io/inject": "false"},
        "spec": work["spec"],
    }
    return {"service": service, "scheduler": scheduler_pod, "worker": worker_pod}


def _services(docs: list[dict]) -> list[dict]:
    """Every Service the manifests make, directly or through a DaskCluster."""
    out = [d for d in docs if d["kind"] == "Service"]
    out += [_operator_objects(d)["service"] for d in docs if d["kind"] == "DaskCluster"]
    return out


def _exposed_services(docs: list[dict]) -> list[str]:
    """Services reachable from outside the cluster (the default type is ClusterIP)."""
    return [s["metadata"]["name"] for s in _services(docs)
            if s["spec"].get("type", "ClusterIP") in EXPOSED]


def _command(container: dict) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def _container_problems(pod: dict, where: str) -> list[str]:
    """Non-root, no privilege escalation, read-only root, CPU and memory limits: what is missing
    from a pod spec (pod-level securityContext counts for its containers)."""
    problems = []
    pod_sc = pod.get("securityContext", {})
    for c in [*pod.get("initContainers", []), *pod["containers"]]:
        sc = pod_sc | c.get("securityContext", {})
        at = f"{where}/{c['name']}"
        if sc.get("runAsNonRoot") is not True:
            problems.append(f"{at}: runAsNonRoot is not true")
        if sc.get("runAsUser", 1) == 0:
            problems.append(f"{at}: runAsUser 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{at}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{at}: root file system writable")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{at}: capabilities not dropped")
        limits = c.get("resources", {}).get("limits", {})
        problems += [f"{at}: no {r} limit" for r in ("cpu", "memory") if r not in limits]
    return problems


def _peers_on_port(policy: dict, port: int) -> list[dict | str]:
    """The peers an ingress NetworkPolicy admits on a TCP port: '*' for anyone (a rule without
    `from`), else each `from` entry. A rule without `ports` covers every port."""
    peers: list[dict | str] = []
    for rule in policy["spec"].get("ingress", []):
        ports = rule.get("ports")
        if ports and not any(p.get("protocol", "TCP") == "TCP" and p.get("port") == port
                             and "endPort" not in p for p in ports):
            continue
        peers += rule.get("from") or ["*"]
    return peers


def _peer_admits(peer: dict | str, labels: dict, namespace: str, ns_labels: dict) -> bool:
    """Whether a NetworkPolicy peer admits a pod (its labels, its namespace's labels)."""
    if peer == "*":
        return True
    if "ipBlock" in peer:
        return True  # an address range: anything in it, assume the worst
    in_ns = (_selects(peer["namespaceSelector"], ns_labels) if "namespaceSelector" in peer
             else namespace == "aquila")
    pods = _selects(peer["podSelector"], labels) if "podSelector" in peer else True
    return in_ns and pods


@pytest.fixture(scope="module")
def k8s() -> dict:
    docs = _k8s_docs()
    cluster = _one(docs, "DaskCluster")
    cron = _one(docs, "CronJob")
    ops = _operator_objects(cluster)
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    return {"docs": docs, "cluster": cluster, "cron": cron, **ops,
            "driver": {"labels": pod["metadata"]["labels"], "spec": pod["spec"]},
            "ns": _one(docs, "Namespace")}


@pytest.mark.parametrize("name", [f for f in K8S_FILES if f != "kustomization.yaml"])
def test_every_manifest_parses_and_is_named(name):
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d is not None]
    assert docs
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for doc in docs:
        assert doc["apiVersion"] == "v1" or "/" in doc["apiVersion"]
        assert doc["kind"] and doc["metadata"]["name"]
        if doc["kind"] != "Namespace":  # every namespaced object says where, for apply -f too
            assert doc["metadata"]["namespace"] == kustomization["namespace"], doc["kind"]


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == on_disk == set(K8S_FILES) - {"kustomization.yaml"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomization_renders():
    """`kubectl kustomize` (offline) builds the same objects the files hold. An installed
    kubectl that cannot run or hangs is a failure here, not a skip."""
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    rendered = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out.stdout) if d}
    assert rendered == {(d["kind"], d["metadata"]["name"]) for d in _k8s_docs()}


def test_cronjob_forbids_concurrent_runs(k8s):
    cron = k8s["cron"]
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    assert len(spec["schedule"].split()) == 5
    assert k8s["driver"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    (rule,) = spec["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]  # busy is not retried
    assert rule["action"] == "FailJob" and 75 in rule["onExitCodes"]["values"]


def _driver_args(k8s) -> tuple[dict, object]:
    (container,) = k8s["driver"]["spec"]["containers"]
    argv = _command(container)
    assert argv[0] == "aquila"
    return container, _parses(argv[1:])


def _scheduler_port(service: dict, name: str) -> dict:
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == name]
    return port


def test_driver_points_at_the_scheduler_service(k8s):
    """The driver's --scheduler is the Service the DaskCluster's operator makes, on the port
    that Service gives the scheduler's comm port, which is the port the scheduler listens on."""
    _, args = _driver_args(k8s)
    assert args.scheduler and not args.cluster_profile and not args.direct
    url = urlsplit(args.scheduler)
    service = k8s["service"]
    name, ns = service["metadata"]["name"], service["metadata"]["namespace"]
    assert url.scheme == "tcp"
    assert url.hostname in {name + s.format(ns=ns) for s in CLUSTER_DOMAIN_SUFFIXES}
    assert ns == k8s["cron"]["metadata"]["namespace"] or url.hostname != name
    comm = _scheduler_port(service, "tcp-comm")
    assert url.port == comm["port"]
    (sched,) = k8s["scheduler"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in sched["ports"]}
    assert comm["targetPort"] in ports
    assert int(_dask_scheduler_params(sched)["port"]) == ports[comm["targetPort"]]


def _dask_scheduler_params(container: dict) -> dict:
    from distributed.cli.dask_scheduler import main

    argv = _command(container)
    assert argv[:2] == ["dask", "scheduler"]
    return main.make_context("dask scheduler", argv[2:]).params  # raises on an unknown option


def _dask_worker_params(container: dict) -> dict:
    from distributed.cli.dask_worker import main

    argv = _command(container)
    assert argv[:2] == ["dask", "worker"]
    return main.make_context("dask worker", argv[2:]).params


def test_dask_commands_parse_and_match_the_ports(k8s):
    (sched,) = k8s["scheduler"]["spec"]["containers"]
    params = _dask_scheduler_params(sched)
    dash = _scheduler_port(k8s["service"], "http-dashboard")
    ports = {p["name"]: p["containerPort"] for p in sched["ports"]}
    assert params["dashboard_address"].rsplit(":", 1)[-1] == str(ports[dash["targetPort"]])
    assert params["host"] == "0.0.0.0"  # reachable through the Service
    for probe in ("readinessProbe", "livenessProbe"):
        assert sched[probe]["httpGet"]["port"] == dash["targetPort"]
    (worker,) = k8s["worker"]["spec"]["containers"]
    wp = _dask_worker_params(worker)
    assert wp["scheduler"] is None  # from DASK_SCHEDULER_ADDRESS, which the operator sets
    assert wp["name"] == "$(DASK_WORKER_NAME)"  # the operator's env, expanded by Kubernetes
    assert wp["nthreads"] == 1
    wports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert wp["dashboard_address"].rsplit(":", 1)[-1] == str(wports["http-dashboard"])
    assert wp["local_directory"].startswith(
        tuple(m["mountPath"] for m in worker["volumeMounts"]))  # writable: the root is not
    images = {c["image"] for c in (sched, worker, *k8s["driver"]["spec"]["containers"])}
    assert len(images) == 1  # one Aquila, one distributed everywhere


def test_driver_and_workers_share_the_store_and_read_the_workflow(k8s):
    from pipeline.spec.workflow import spec_from_dict

    container, args = _driver_args(k8s)
    driver = k8s["driver"]["spec"]
    (worker,) = k8s["worker"]["spec"]["containers"]

    def claims(pod: dict, c: dict) -> dict[str, str]:
        vols = {v["name"]: v for v in pod["volumes"]}
        return {m["mountPath"]: vols[m["name"]]["persistentVolumeClaim"]["claimName"]
                for m in c["volumeMounts"] if "persistentVolumeClaim" in vols[m["name"]]}

    shared = claims(driver, container).items() & claims(k8s["worker"]["spec"], worker).items()
    (mount, claim), = shared  # one volume, at one path, in both
    pvc = _one(k8s["docs"], "PersistentVolumeClaim", claim)
    assert "ReadWriteMany" in pvc["spec"]["accessModes"]
    assert str(args.store).startswith(mount + "/")
    # the spec: a ConfigMap key mounted where the command names it
    vols = {v["name"]: v for v in driver["volumes"]}
    (cm_mount,) = [m for m in container["volumeMounts"] if "configMap" in vols[m["name"]]]
    assert args.spec.parent == Path(cm_mount["mountPath"]) and cm_mount.get("readOnly")
    cm = _one(k8s["docs"], "ConfigMap", vols[cm_mount["name"]]["configMap"]["name"])
    text = cm["data"][args.spec.name]
    spec = spec_from_dict(yaml.safe_load(text), base_dir=args.spec.parent, source="configmap")
    assert spec.grid.bounds is not None and spec.products.cube is not None  # nightly needs both
    stores = [spec.products.cube, spec.products.mosaic, *spec.products.mosaics]
    assert all(str(p.store).startswith(mount + "/") for p in stores if p is not None)


def test_scheduler_service_is_cluster_ip_and_nothing_is_exposed(k8s):
    assert k8s["service"]["spec"]["type"] == "ClusterIP"
    assert _exposed_services(k8s["docs"]) == []
    assert not [d for d in k8s["docs"] if d["kind"] == "Ingress"]  # port-forward only


def test_exposed_service_checker_catches_loadbalancer_and_nodeport(k8s):
    docs = copy.deepcopy(k8s["docs"])
    _one(docs, "DaskCluster")["spec"]["scheduler"]["service"]["type"] = "LoadBalancer"
    assert _exposed_services(docs) == ["aquila-nightly-scheduler"]
    docs = copy.deepcopy(k8s["docs"])
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dash"},
                 "spec": {"type": "NodePort", "ports": [{"port": 8787}]}})
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "plain"},
                 "spec": {"ports": [{"port": 80}]}})  # no type: ClusterIP
    assert _exposed_services(docs) == ["dash"]


def _scheduler_policy(k8s, docs=None) -> dict:
    docs = docs or k8s["docs"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"
                and _selects(d["spec"]["podSelector"], k8s["scheduler"]["labels"])]
    assert len(policies) == 1
    return policies[0]


MONITORING = {"kubernetes.io/metadata.name": "monitoring"}
OPERATOR_NS = {"kubernetes.io/metadata.name": "dask-operator"}
OPERATOR_POD = {"app.kubernetes.io/name": "dask-kubernetes-operator"}


def _admitted(policy: dict, port: int, k8s) -> set[str]:
    """Which of the parties that exist (and a stranger pod, and the monitoring namespace)
    a policy admits on a port."""
    ns_labels = {"kubernetes.io/metadata.name": "aquila", **k8s["ns"]["metadata"]["labels"]}
    parties = {
        "driver": (k8s["driver"]["labels"], "aquila", ns_labels),
        "worker": (k8s["worker"]["labels"], "aquila", ns_labels),
        "scheduler": (k8s["scheduler"]["labels"], "aquila", ns_labels),
        "stranger": ({"app": "other"}, "aquila", ns_labels),
        "aquila-labelled stranger": ({"app.kubernetes.io/name": "aquila"}, "aquila", ns_labels),
        "monitoring": ({"app.kubernetes.io/name": "prometheus"}, "monitoring", MONITORING),
        "operator": (OPERATOR_POD, "dask-operator", OPERATOR_NS),
        "other namespace": ({"app": "other"}, "default", {"kubernetes.io/metadata.name": "x"}),
    }
    peers = _peers_on_port(policy, port)
    return {who for who, (labels, ns, nsl) in parties.items()
            if any(_peer_admits(p, labels, ns, nsl) for p in peers)}


def test_networkpolicy_admits_only_driver_and_workers_to_the_scheduler(k8s):
    """8786 from the driver and the workers (and the operator, which the DaskAutoscaler needs
    for the scheduler's adaptive target); 8787 from the monitoring namespace (and the
    operator). The policy selects the scheduler by the labels the operator gives it, and not
    the workers."""
    policy = _scheduler_policy(k8s)
    assert "Ingress" in policy["spec"]["policyTypes"]
    assert not _selects(policy["spec"]["podSelector"], k8s["worker"]["labels"])
    assert not _selects(policy["spec"]["podSelector"], k8s["driver"]["labels"])
    comm = _scheduler_port(k8s["service"], "tcp-comm")["port"]
    dash = _scheduler_port(k8s["service"], "http-dashboard")["port"]
    assert _admitted(policy, comm, k8s) == {"driver", "worker", "operator"}
    assert _admitted(policy, dash, k8s) == {"monitoring", "operator"}
    assert _admitted(policy, 9999, k8s) == set()


def test_networkpolicy_checker_catches_open_rules(k8s):
    open_to_all = copy.deepcopy(_scheduler_policy(k8s))
    open_to_all["spec"]["ingress"].append({"ports": [{"protocol": "TCP", "port": 8786}]})
    assert "stranger" in _admitted(open_to_all, 8786, k8s)
    all_ports = copy.deepcopy(_scheduler_policy(k8s))
    all_ports["spec"]["ingress"].append(
        {"from": [{"namespaceSelector": {}}]})  # every namespace, every port
    assert {"other namespace", "stranger"} <= _admitted(all_ports, 8787, k8s)
    loose = copy.deepcopy(_scheduler_policy(k8s))
    loose["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"].pop(
        "app.kubernetes.io/component")
    assert "aquila-labelled stranger" in _admitted(loose, 8786, k8s)
    docs = copy.deepcopy(k8s["docs"])
    for d in docs:  # a policy whose selector misses the scheduler's labels is no policy
        if d["kind"] == "NetworkPolicy":
            d["spec"]["podSelector"]["matchLabels"]["dask.org/component"] = "schedular"
    with pytest.raises(AssertionError):
        _scheduler_policy(k8s, docs)


def test_networkpolicy_for_the_workers(k8s):
    policies = [d for d in k8s["docs"] if d["kind"] == "NetworkPolicy"
                and _selects(d["spec"]["podSelector"], k8s["worker"]["labels"])]
    (policy,) = policies
    assert _admitted(policy, 40000, k8s) == {"driver", "worker", "scheduler"}  # any port
    (worker,) = k8s["worker"]["spec"]["containers"]
    metrics = {p["name"]: p["containerPort"] for p in worker["ports"]}["http-dashboard"]
    assert _admitted(policy, metrics, k8s) == {"driver", "worker", "scheduler", "monitoring"}


def _monitor_problems(monitor: dict, service: dict) -> list[str]:
    """Why a ServiceMonitor would not scrape the service's /metrics."""
    problems = []
    spec = monitor["spec"]
    if not _selects(spec["selector"], service["metadata"]["labels"]):
        problems.append("selector misses the service's labels")
    names = spec.get("namespaceSelector", {}).get("matchNames")
    if names is not None and service["metadata"]["namespace"] not in names:
        problems.append("namespaceSelector misses the service's namespace")
    elif names is None and monitor["metadata"]["namespace"] != service["metadata"]["namespace"]:
        problems.append("in another namespace, without a namespaceSelector")
    ports = {p.get("name") for p in service["spec"]["ports"]}
    for ep in spec["endpoints"]:
        if ep.get("port") not in ports:
            problems.append(f"port {ep.get('port')!r} is not a port name of the service")
        if ep.get("path", "/metrics") != "/metrics":
            problems.append(f"path {ep['path']}")
    return problems


def test_servicemonitor_scrapes_the_scheduler_service(k8s):
    monitor = _one(k8s["docs"], "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert _monitor_problems(monitor, k8s["service"]) == []
    (ep,) = monitor["spec"]["endpoints"]
    assert ep["path"] == "/metrics" and ep["port"] == "http-dashboard"
    # the port it scrapes is the one the monitoring namespace may reach
    port = _scheduler_port(k8s["service"], ep["port"])["port"]
    assert "monitoring" in _admitted(_scheduler_policy(k8s), port, k8s)
    # the worker PodMonitor: the workers' named port, their labels
    pods = _one(k8s["docs"], "PodMonitor")
    assert _selects(pods["spec"]["selector"], k8s["worker"]["labels"])
    assert not _selects(pods["spec"]["selector"], k8s["scheduler"]["labels"])
    (worker,) = k8s["worker"]["spec"]["containers"]
    assert {e["port"] for e in pods["spec"]["podMetricsEndpoints"]} <= {
        p["name"] for p in worker["ports"]}


def test_servicemonitor_checker_catches_mismatches(k8s):
    monitor = _one(k8s["docs"], "ServiceMonitor")
    wrong_port = copy.deepcopy(monitor)
    wrong_port["spec"]["endpoints"][0]["port"] = "metrics"
    assert _monitor_problems(wrong_port, k8s["service"]) == [
        "port 'metrics' is not a port name of the service"]
    wrong_labels = copy.deepcopy(monitor)
    wrong_labels["spec"]["selector"]["matchLabels"]["dask.org/cluster-name"] = "other"
    assert _monitor_problems(wrong_labels, k8s["service"]) == [
        "selector misses the service's labels"]
    wrong_ns = copy.deepcopy(monitor)
    wrong_ns["spec"]["namespaceSelector"]["matchNames"] = ["default"]
    assert _monitor_problems(wrong_ns, k8s["service"]) == [
        "namespaceSelector misses the service's namespace"]


def test_pods_run_as_non_root_with_limits(k8s):
    pods = {"scheduler": k8s["scheduler"]["spec"], "worker": k8s["worker"]["spec"],
            "driver": k8s["driver"]["spec"]}
    for where, pod in pods.items():
        assert _container_problems(pod, where) == []
        assert pod.get("automountServiceAccountToken") is False, where  # no API access needed
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for c in pod["containers"]:  # the read-only root: a writable /tmp instead
            assert "/tmp" in {m["mountPath"] for m in c["volumeMounts"]}, where
            assert {"name": "HOME", "value": "/tmp"} in c["env"], where
    labels = k8s["ns"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_container_checker_catches_root_and_missing_limits(k8s):
    pod = copy.deepcopy(k8s["driver"]["spec"])
    pod["securityContext"]["runAsUser"] = 0
    del pod["containers"][0]["resources"]["limits"]["cpu"]
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    assert _container_problems(pod, "driver") == [
        "driver/aquila: runAsUser 0", "driver/aquila: root file system writable",
        "driver/aquila: no cpu limit"]
    pod = copy.deepcopy(k8s["worker"]["spec"])
    del pod["securityContext"]
    assert "worker/worker: runAsNonRoot is not true" in _container_problems(pod, "worker")


def test_autoscaler_scales_the_cluster(k8s):
    scaler = _one(k8s["docs"], "DaskAutoscaler")
    assert scaler["apiVersion"] == k8s["cluster"]["apiVersion"] == "kubernetes.dask.org/v1"
    assert scaler["spec"]["cluster"] == k8s["cluster"]["metadata"]["name"]
    assert scaler["metadata"]["namespace"] == k8s["cluster"]["metadata"]["namespace"]
    assert 0 <= scaler["spec"]["minimum"] <= scaler["spec"]["maximum"]
    assert scaler["spec"]["maximum"] >= 1
    assert k8s["cluster"]["spec"]["idleTimeout"] == 0  # a standing cluster
    assert k8s["cluster"]["spec"]["worker"]["replicas"] == scaler["spec"]["minimum"]


def test_operator_renders_what_the_checks_assume(k8s):
    """The labels and Service name used above are those dask-kubernetes' controller sets."""
    ctl = pytest.importorskip("dask_kubernetes.operator.controller.controller")
    cluster = k8s["cluster"]
    name, ns = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    sched = cluster["spec"]["scheduler"]
    labels = cluster["metadata"]["labels"] | sched["metadata"]["labels"]
    service = ctl.build_scheduler_service_spec(name, sched["service"], {}, labels)
    assert service["metadata"]["name"] == k8s["service"]["metadata"]["name"]
    assert service["metadata"]["labels"] == k8s["service"]["metadata"]["labels"]
    deployment = ctl.build_scheduler_deployment_spec(name, sched["spec"], {}, labels)
    assert deployment["spec"]["template"]["metadata"]["labels"] == k8s["scheduler"]["labels"]
    selector = {"matchLabels": sched["service"]["selector"]}
    assert selector["matchLabels"] and _selects(selector, k8s["scheduler"]["labels"])
    work = cluster["spec"]["worker"]
    group = ctl.build_default_worker_group_spec(name, work, {}, dict(cluster["metadata"]["labels"]))
    wlabels = group["metadata"]["labels"] | work["metadata"]["labels"]
    worker = ctl.build_worker_deployment_spec(
        group["metadata"]["name"], ns, name, "0123456789", work["spec"], {}, wlabels)
    assert worker["spec"]["template"]["metadata"]["labels"] == k8s["worker"]["labels"]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    url = urlsplit(env["DASK_SCHEDULER_ADDRESS"])  # the workers' address: the driver's Service
    assert (url.hostname.split(".")[0], url.port) == (
        k8s["service"]["metadata"]["name"], _scheduler_port(k8s["service"], "tcp-comm")["port"])


def _schema_problems(value, schema: dict, at: str = "") -> list[str]:
    """A structural OpenAPI v3 check (unknown fields, required fields, types), as the API
    server prunes and validates a custom resource."""
    if schema.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, (int, str)) else [f"{at}: not int or string"]
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return []
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool,
             "integer": int, "number": (int, float)}
    if kind in types and (not isinstance(value, types[kind]) or
                          (kind in ("integer", "number") and isinstance(value, bool))):
        return [f"{at}: not {kind}"]
    problems = []
    if kind == "object" or "properties" in schema:
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        problems += [f"{at}.{k}: required" for k in schema.get("required", []) if k not in value]
        for k, v in value.items():
            if props is not None and k in props:
                problems += _schema_problems(v, props[k], f"{at}.{k}")
            elif isinstance(extra, dict):
                problems += _schema_problems(v, extra, f"{at}.{k}")
            elif props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
                problems.append(f"{at}.{k}: unknown field")
    if kind == "array" and "items" in schema:
        for i, v in enumerate(value):
            problems += _schema_problems(v, schema["items"], f"{at}[{i}]")
    return problems


def _crd_schema(kind: str) -> dict:
    import dask_kubernetes

    crds = (Path(dask_kubernetes.__file__).parent
            / "operator/deployment/helm/dask-kubernetes-operator/crds")
    crd = yaml.safe_load((crds / f"{kind.lower()}.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return version["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("kind", ["DaskCluster", "DaskAutoscaler"])
def test_dask_resources_fit_the_operators_crds(k8s, kind):
    pytest.importorskip("dask_kubernetes")
    doc = _one(k8s["docs"], kind)
    schema = _crd_schema(kind)
    assert _schema_problems(doc["spec"], schema["properties"]["spec"], "spec") == []
    bad = copy.deepcopy(doc["spec"])  # the check can fail: a misspelt field, a wrong type
    if kind == "DaskCluster":
        bad["scheduler"]["spec"]["containers"][0]["resource"] = {}
        bad["worker"]["replicas"] = "0"
        expected = {"spec.scheduler.spec.containers[0].resource: unknown field",
                    "spec.worker.replicas: not integer"}
    else:
        del bad["maximum"]
        expected = {"spec.maximum: required"}
    assert set(_schema_problems(bad, schema["properties"]["spec"], "spec")) == expected
