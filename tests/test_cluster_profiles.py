"""Cluster profiles (docs/clusters.md): every example in cluster/ validates; bad profiles are
refused with the file, the field and the fix; what each kind would hand its cluster library is
checked field by field (SLURM/PBS job scripts, the Kubernetes manifest, SSHCluster's arguments)
without a queue, a Kubernetes cluster or an SSH daemon; and a real Dask Gateway (local
backend, loopback) runs the demo workflow end to end, equal to a direct run."""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from pipeline.engine.cluster import cluster_from_cli, load_cluster_profile, local_shape
from pipeline.engine.clusters.gateway import GatewayProfile
from pipeline.engine.clusters.jobqueue import PBSProfile, SLURMProfile, job_script
from pipeline.engine.clusters.kubernetes import KubernetesProfile, cluster_spec
from pipeline.engine.clusters.model import require
from pipeline.engine.clusters.profile import KINDS
from pipeline.engine.clusters.ssh import SSHProfile
from pipeline.errors import RunError, SpecError
from tests.conftest import make_spec_dict

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXAMPLES = ROOT / "cluster"


def _is_profile(path: Path) -> bool:
    """cluster/ also holds deployment and monitoring files: a Kubernetes manifest (apiVersion:)
    and Prometheus rules (groups:) are not profiles, every other YAML file there is one."""
    doc = yaml.safe_load(path.read_text()) or {}
    return "apiVersion" not in doc and "groups" not in doc


PROFILES = sorted(p for p in EXAMPLES.glob("*.yaml") if _is_profile(p))


# ------------------------------------------------------------------------- the examples


@pytest.mark.parametrize("path", PROFILES, ids=[p.name for p in PROFILES])
def test_every_example_profile_validates(path):
    options = load_cluster_profile(path)
    kind = yaml.safe_load(path.read_text()).get("kind", "local")
    assert options.kind == kind
    if kind in ("local", "address"):
        assert options.backend is None
    else:
        assert options.backend is not None and options.backend.kind == kind
        options.backend.require_library()  # the test extra installs every cluster library


def test_there_is_an_example_of_every_kind():
    kinds = {yaml.safe_load(p.read_text()).get("kind", "local") for p in PROFILES}
    assert kinds == set(KINDS)
    assert (ROOT / "docs" / "clusters.md").is_file()
    text = (ROOT / "docs" / "clusters.md").read_text()
    for kind in KINDS:
        assert f"`kind: {kind}`" in text, f"docs/clusters.md does not explain kind {kind}"


def test_nothing_else_in_the_package_makes_clusters():
    maker = re.compile(
        r"\b(LocalCluster|SpecCluster|SSHCluster|SLURMCluster|PBSCluster|KubeCluster|"
        r"GatewayCluster|Gateway|Client)\("
    )
    allowed = {ROOT / "pipeline/engine/cluster.py",
               *(ROOT / "pipeline/engine/clusters").glob("*.py")}
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in (ROOT / "pipeline").rglob("*.py") if p not in allowed
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if maker.search(line.split("#")[0])
    ]
    assert not offenders, f"clusters are made only in pipeline/engine/cluster(s): {offenders}"


# ------------------------------------------------------------------------- SLURM and PBS


def _flags(command: list[str]) -> dict[str, str | None]:
    """``--flag value`` pairs of a command line (a flag without a value maps to None)."""
    flags: dict[str, str | None] = {}
    for i, word in enumerate(command):
        if word.startswith("--"):
            nxt = command[i + 1] if i + 1 < len(command) else None
            flags[word] = None if nxt is None or nxt.startswith("--") else nxt
    return flags


def test_slurm_job_script_from_the_example_profile():
    profile = load_cluster_profile(EXAMPLES / "slurm.yaml").backend
    assert isinstance(profile, SLURMProfile)
    script = job_script(profile, scheduler="tcp://10.1.2.3:8786")
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert "#SBATCH -J aquila-worker" in directives
    assert "#SBATCH -p compute" in directives  # queue: the partition
    assert "#SBATCH -A geo-imaging" in directives  # account
    assert "#SBATCH --cpus-per-task=8" in directives  # cores
    assert "#SBATCH --mem=32G" in directives  # memory: 32GiB per job
    assert "#SBATCH -t 04:00:00" in directives  # walltime
    assert "#SBATCH --exclusive" in directives  # job_extra_directives
    assert "#SBATCH -o /scratch/aquila/logs/aquila-worker-%J.out" in directives
    assert "source /srv/aquila/.venv/bin/activate" in script.splitlines()  # the prologue
    worker = shlex.split(script.strip().splitlines()[-1])
    assert worker[:4] == ["/srv/aquila/.venv/bin/python", "-m", "distributed.cli.dask_worker",
                          "tcp://10.1.2.3:8786"]
    flags = _flags(worker)
    assert "--nanny" in flags
    assert flags["--nworkers"] == "4"  # processes
    assert flags["--nthreads"] == "2"  # 8 cores / 4 processes
    assert flags["--memory-limit"] == "8.00GiB"  # 32 GiB / 4 processes
    assert flags["--interface"] == "ib0"
    assert flags["--local-directory"] == "/tmp"
    kwargs = profile.cluster_kwargs()
    assert kwargs["security"] is True and kwargs["shared_temp_directory"] == "/scratch/aquila/tmp"
    assert kwargs["scheduler_options"] == {"dashboard_address": "127.0.0.1:8787"}
    assert profile.jobs == 4


def test_pbs_job_script_from_the_example_profile():
    profile = load_cluster_profile(EXAMPLES / "pbs.yaml").backend
    assert isinstance(profile, PBSProfile)
    script = job_script(profile, scheduler="tcp://10.1.2.3:8786")
    directives = [line for line in script.splitlines() if line.startswith("#PBS")]
    assert directives[:5] == [
        "#PBS -N aquila-worker",
        "#PBS -q workq",  # queue
        "#PBS -A geo-imaging",  # account
        "#PBS -l select=1:ncpus=8:mem=32GB",  # resource_spec: cores and memory
        "#PBS -l walltime=04:00:00",
    ]
    worker = shlex.split(script.strip().splitlines()[-1])
    assert worker[0] == "/srv/aquila/.venv/bin/python" and "tcp://10.1.2.3:8786" in worker
    flags = _flags(worker)
    assert flags["--nworkers"] == "4" and flags["--nthreads"] == "2"
    assert "security" not in profile.cluster_kwargs()  # tls not asked for


# ------------------------------------------------------------------------- Kubernetes


def test_kubernetes_manifest_from_the_example_profile():
    profile = load_cluster_profile(EXAMPLES / "kubernetes.yaml").backend
    assert isinstance(profile, KubernetesProfile)
    spec = cluster_spec(profile)
    assert spec["apiVersion"] == "kubernetes.dask.org/v1" and spec["kind"] == "DaskCluster"
    assert spec["metadata"] == {"name": "aquila-run", "namespace": "aquila"}
    assert spec["spec"]["idleTimeout"] == 3600
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == 4
    (wc,) = worker["spec"]["containers"]
    (sc,) = spec["spec"]["scheduler"]["spec"]["containers"]
    for container in (wc, sc):
        assert container["image"] == "registry.example.org/aquila:0.1.0"
        assert container["resources"] == {"requests": {"cpu": "2", "memory": "8Gi"},
                                          "limits": {"memory": "12Gi"}}
        assert {e["name"]: e["value"] for e in container["env"]} == {
            "GDAL_CACHEMAX": "512", "MALLOC_TRIM_THRESHOLD_": "268435456"}
    assert wc["args"][:2] == ["dask", "worker"]
    assert sc["args"][:2] == ["dask", "scheduler"]  # not the removed dask-scheduler script
    assert spec["spec"]["scheduler"]["service"]["type"] == "ClusterIP"
    wc["resources"]["limits"]["memory"] = "1Gi"  # the two pods' resources are not one object
    assert sc["resources"]["limits"]["memory"] == "12Gi"


# ------------------------------------------------------------------------- SSH


def test_ssh_cluster_arguments_from_the_example_profile():
    profile = load_cluster_profile(EXAMPLES / "ssh.yaml").backend
    assert isinstance(profile, SSHProfile)
    kwargs = profile.cluster_kwargs()
    assert kwargs["hosts"] == ["head.example.org", "node1.example.org", "node2.example.org"]
    home = Path("~").expanduser()
    assert kwargs["connect_options"] == {
        "username": "aquila",
        "port": 22,
        "known_hosts": str(home / ".ssh/known_hosts"),
        "client_keys": [str(home / ".ssh/id_ed25519")],
    }
    assert kwargs["worker_options"] == {"n_workers": 4, "nthreads": 1, "memory_limit": "8GiB"}
    assert kwargs["scheduler_options"] == {"port": 8786, "dashboard_address": "127.0.0.1:8787"}
    assert kwargs["remote_python"] == "/srv/aquila/.venv/bin/python"
    # the arguments are what distributed.SSHCluster accepts (no host is contacted)
    import inspect

    from distributed import SSHCluster

    inspect.signature(SSHCluster).bind(**kwargs)
    with pytest.raises(Exception, match="frozen"):
        profile.scheduler_host = "elsewhere"  # type: ignore[misc]


def test_ssh_profile_never_switches_host_key_checking_off(tmp_path):
    path = tmp_path / "ssh.yaml"
    path.write_text("kind: ssh\nscheduler_host: a\nworker_hosts: [b]\n"
                    "connect_options: {known_hosts: null}\n")
    assert "known_hosts" not in load_cluster_profile(path).backend.cluster_kwargs()[  # type: ignore[union-attr]
        "connect_options"]  # None means asyncssh's default file, never "no checking"
    path.write_text("kind: ssh\nscheduler_host: a\nworker_hosts: []\n")
    with pytest.raises(SpecError, match=r"worker_hosts: .*at least 1"):
        load_cluster_profile(path)


# ------------------------------------------------------------------------- bad profiles

BAD = {
    "unknown-kind": ("kind: yarn\n", ["kind: 'yarn' is not a cluster kind", "slurm, pbs"]),
    "unknown-field": (
        "kind: slurm\ncores: 4\nmemory: 8GiB\nwalltime: '01:00:00'\nwall_time: '01:00:00'\n",
        ["unknown key 'wall_time'", "remove it or fix its spelling", "walltime"],
    ),
    "unknown-nested-field": (
        "kind: ssh\nscheduler_host: a\nworker_hosts: [b]\nconnect_options: {known_host: x}\n",
        ["unknown key 'connect_options.known_host'", "known_hosts"],
    ),
    "wrong-type-count": (
        "kind: slurm\ncores: '4'\nmemory: 8GiB\nwalltime: '01:00:00'\n",
        ["cores: '4' is not a whole number"],
    ),
    "wrong-type-bool": (
        "kind: gateway\naddress: http://gw:8000\nworkers: true\n",
        ["workers: True is not a whole number"],
    ),
    "wrong-type-string": (
        "kind: ssh\nscheduler_host: a\nworker_hosts: [b]\nremote_python: 3\n",
        ["remote_python: must be a string (quote it) (got 3)"],
    ),
    "walltime-shape": (
        "kind: slurm\ncores: 4\nmemory: 8GiB\nwalltime: 1h\n",
        ["walltime: must look like HH:MM:SS", "(got '1h')"],
    ),
    "walltime-unquoted": (  # YAML 1.1 reads 4:00:00 as the sexagesimal number 14400
        "kind: pbs\ncores: 4\nmemory: 8GiB\nwalltime: 4:00:00\n",
        ["walltime: must look like HH:MM:SS, quoted", "(got 14400)"],
    ),
    "missing-field": (
        "kind: slurm\ncores: 4\nmemory: 8GiB\n",
        ["walltime: missing; a 'slurm' profile needs it (see cluster/slurm.yaml)"],
    ),
    "missing-image": ("kind: kubernetes\n", ["image: missing"]),
    "bad-memory": (
        "kind: pbs\ncores: 4\nmemory: lots\nwalltime: '01:00:00'\n",
        ["memory: must look like '16GiB' or '4 GB' (got 'lots')"],
    ),
    "bad-gateway-address": (
        "kind: gateway\naddress: gateway.example.org\n",
        ["address: must look like 'https://gateway.example.org'"],
    ),
    "password-in-profile": (
        "kind: gateway\naddress: https://gw\nauth: {username: me, password: secret}\n",
        ["unknown key 'auth.password'", "password_env"],
    ),
    "bad-k8s-name": (
        "kind: kubernetes\nimage: a/b:1\nname: Aquila_Run\n",
        ["name: must look like a DNS label", "'Aquila_Run'"],
    ),
    "shell-in-queue": (
        "kind: slurm\ncores: 4\nmemory: 8GiB\nwalltime: '01:00:00'\nqueue: 'x; rm -rf ~'\n",
        ["queue: must look like one word without spaces or shell characters"],
    ),
    "tls-with-tcp": (
        "kind: address\nscheduler: tcp://h:8786\n"
        "tls: {ca_file: a, cert_file: b, key_file: c}\n",
        ["is not a tls:// address"],
    ),
    "zero-workers": ("kind: local\nn_workers: 0\n", ["n_workers: 0 is too small"]),
    "not-a-mapping": ("- kind: local\n", ["not a mapping", "kind: local"]),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_profile_is_refused_with_file_field_and_fix(tmp_path, name):
    text, fragments = BAD[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_cluster_profile(path)
    message = str(info.value)
    assert message.startswith(f"cluster profile {path}: "), message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    if name not in ("unknown-kind", "not-a-mapping"):
        assert message.endswith("fix the profile (examples: cluster/*.yaml, docs/clusters.md)")


def test_profile_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("kind: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_cluster_profile(path)
    path.write_text("kind: slurm\nbase: &b {cores: 4}\nother: *b\n")
    with pytest.raises(SpecError, match="anchors"):
        load_cluster_profile(path)
    assert not (Path.cwd() / "pwned").exists()


def test_a_missing_cluster_library_names_the_pip_install(monkeypatch):
    with pytest.raises(RunError, match=r"pip install 'aquila\[clusters\]'") as info:
        require("aquila_no_such_library", kind="slurm", package="dask-jobqueue")
    assert info.value.reason == "cluster_library_missing" and "dask-jobqueue" in str(info.value)
    # the CLI's path refuses before any work: the library cannot be imported in this process
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)
    args = argparse.Namespace(cluster_profile=str(EXAMPLES / "slurm.yaml"), scheduler=None)
    with pytest.raises(RunError, match="needs the dask-jobqueue package"):
        cluster_from_cli(args)


def test_scheduler_flag_and_a_remote_profile_are_refused_together():
    args = argparse.Namespace(cluster_profile=str(EXAMPLES / "gateway.yaml"),
                              scheduler="tcp://10.0.0.5:8786")
    with pytest.raises(SpecError, match="give one of them"):
        cluster_from_cli(args)


def test_kindless_profiles_keep_their_meaning(tmp_path):
    (tmp_path / "old.yaml").write_text("n_workers: 3\n")
    assert load_cluster_profile(tmp_path / "old.yaml").kind == "local"
    (tmp_path / "addr.yaml").write_text("scheduler: tcp://10.0.0.5:8786\n")
    options = load_cluster_profile(tmp_path / "addr.yaml")
    assert options.kind == "address" and options.scheduler == "tcp://10.0.0.5:8786"
    (tmp_path / "empty.yaml").write_text("")
    empty = load_cluster_profile(tmp_path / "empty.yaml")
    assert (empty.n_workers, empty.threads_per_worker) == local_shape()


@pytest.mark.parametrize(
    ("cores", "workers", "threads", "expected"),
    [
        (1, None, None, (1, 1)),
        (2, None, None, (1, 2)),  # this project's CI machine: one worker, its tile cache shared
        (4, None, None, (1, 4)),
        (6, None, None, (2, 3)),
        (8, None, None, (2, 4)),
        (16, None, None, (4, 4)),
        (64, None, None, (16, 4)),
        (2, 2, None, (2, 1)),  # one size given: the other shares the cores out
        (8, 3, None, (3, 2)),
        (8, None, 1, (8, 1)),
        (2, 4, None, (4, 1)),  # more workers than cores: at least one thread each
        (2, 3, 5, (3, 5)),  # both given: taken as they are
    ],
)
def test_the_local_cluster_is_sized_from_the_cores(cores, workers, threads, expected):
    assert local_shape(workers, threads, cores=cores) == expected
    w, t = expected
    assert w * t <= max(cores, (workers or 1) * (threads or 1))  # never more threads than asked


def test_cli_sizes_left_out_come_from_the_cores():
    base = dict(cluster_profile=None, scheduler=None, memory_limit="auto",
                dashboard="127.0.0.1:0")
    both = cluster_from_cli(argparse.Namespace(workers=None, threads=None, **base))
    assert (both.n_workers, both.threads_per_worker) == local_shape()
    one = cluster_from_cli(argparse.Namespace(workers=3, threads=None, **base))
    assert (one.n_workers, one.threads_per_worker) == local_shape(3, None)
    given = cluster_from_cli(argparse.Namespace(workers=2, threads=3, **base))
    assert (given.n_workers, given.threads_per_worker) == (2, 3)


# ------------------------------------------------------------------------- Dask Gateway, real


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture()
def gateway_server(tmp_path):
    """A real dask-gateway-server on loopback: local-process backend, simple auth, its
    clusters' schedulers and workers started from this environment (so they import Aquila)."""
    api, proxy, tcp = _free_ports(3)
    folder = tmp_path / "gateway-server"
    folder.mkdir()
    config = folder / "config.py"
    dask = BIN / "dask"
    config.write_text(
        f'c.DaskGateway.address = "127.0.0.1:{api}"\n'
        f'c.Proxy.address = "127.0.0.1:{proxy}"\n'
        f'c.Proxy.tcp_address = "127.0.0.1:{tcp}"\n'
        'c.DaskGateway.backend_class = '
        '"dask_gateway_server.backends.local.UnsafeLocalBackend"\n'
        'c.DaskGateway.authenticator_class = "dask_gateway_server.auth.SimpleAuthenticator"\n'
        f'c.ClusterConfig.scheduler_cmd = ["{dask}", "scheduler"]\n'
        f'c.ClusterConfig.worker_cmd = ["{dask}", "worker"]\n'
        "c.ClusterConfig.worker_cores = 1\n"
        "c.ClusterConfig.worker_threads = 1\n"
        'c.ClusterConfig.worker_memory = "1.5 G"\n'
        f'c.UnsafeLocalBackend.clusters_directory = "{folder / "clusters"}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (folder / "server.log").open("wb")
    server = subprocess.Popen(
        [str(BIN / "dask-gateway-server"), "-f", str(config)],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    address = f"http://127.0.0.1:{proxy}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{address}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (folder / "server.log").read_text()
            assert time.monotonic() < deadline, "the gateway did not come up in 60 s"
            time.sleep(0.3)
        yield {"address": address, "proxy_address": f"gateway://127.0.0.1:{tcp}"}
    finally:
        server.send_signal(signal.SIGINT)  # stops its clusters, then itself
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)  # its own session: only what it started
            server.wait(timeout=10)
        log.close()


@pytest.mark.slow
def test_demo_workflow_through_a_real_gateway_equals_a_direct_run(
    tmp_path, tiny_catalog, gateway_server
):
    profile = tmp_path / "gateway.yaml"
    profile.write_text(yaml.safe_dump({
        "kind": "gateway",
        "address": gateway_server["address"],
        "proxy_address": gateway_server["proxy_address"],
        "auth": {"type": "basic", "username": "aquila-test"},
        "workers": 2,
    }))
    assert isinstance(load_cluster_profile(profile).backend, GatewayProfile)
    outputs, stdout = {}, {}
    for name, flags in (("gateway", ["--cluster-profile", str(profile)]),
                        ("direct", ["--direct"])):
        out = tmp_path / name
        out.mkdir()
        spec = out / "spec.yaml"
        spec.write_text(yaml.safe_dump(make_spec_dict(
            tiny_catalog.root, out, bounds=tiny_catalog.area_bounds)))
        started = time.perf_counter()
        run = subprocess.run([str(BIN / "aquila"), "run", str(spec), "--no-progress", *flags],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "success" in run.stdout
        outputs[name], stdout[name] = out, run.stdout
        print(f"{name} run: {time.perf_counter() - started:.1f} s")
    assert f"dashboard: {gateway_server['address']}/clusters/" in stdout["gateway"]
    for store in ("mosaic.zarr", "cube.zarr"):
        got = xr.open_zarr(outputs["gateway"] / store)
        want = xr.open_zarr(outputs["direct"] / store)
        assert set(got.data_vars) == set(want.data_vars) and got.data_vars
        for var in want.data_vars:
            np.testing.assert_array_equal(got[var].values, want[var].values, err_msg=var)
        for coord in want.coords:
            np.testing.assert_array_equal(got[coord].values, want[coord].values)
    # the run shut its gateway cluster down: nothing is left running on the server
    request = urllib.request.Request(
        f"{gateway_server['address']}/api/v1/clusters/",
        headers={"Authorization": "Basic " + base64.b64encode(b"aquila-test:").decode()},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {}


def test_a_gateway_that_does_not_answer_is_one_clear_run_error(tmp_path):
    from pipeline.engine.cluster import open_client

    (port,) = _free_ports(1)  # nothing listens there
    path = tmp_path / "gateway.yaml"
    path.write_text(f"kind: gateway\naddress: http://127.0.0.1:{port}\nworkers: 1\n")
    options = load_cluster_profile(path)
    with (pytest.raises(RunError, match=r"could not start the 'gateway' cluster of http") as info,
          open_client(options)):
        pass
    assert info.value.reason == "cluster_unreachable"
