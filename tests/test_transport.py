"""Transport: a TLS cluster profile; a plain-TCP client is refused; the dashboard on loopback."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.engine.cluster import ClusterOptions, TLSFiles, load_cluster_profile, open_client
from pipeline.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]


def make_certs(folder: Path) -> TLSFiles:
    """One self-signed certificate, used as the CA and by every peer (test only)."""
    folder.mkdir(parents=True, exist_ok=True)
    key, pem = folder / "aquila.key", folder / "aquila.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(key),
            "-out",
            str(pem),
            "-subj",
            "/CN=aquila-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    return TLSFiles(ca_file=pem, cert_file=pem, key_file=key)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_cluster_refuses_plain_tcp(tmp_path):
    from distributed import Client

    tls = make_certs(tmp_path / "tls")
    options = ClusterOptions(
        n_workers=1,
        threads_per_worker=1,
        dashboard_address="127.0.0.1:0",
        tls=tls,
        memory_limit="1GiB",
    )
    with open_client(options) as client:
        address = client.scheduler.address
        assert address.startswith("tls://127.0.0.1:")
        assert client.submit(sum, [1, 2, 3]).result(timeout=60) == 6  # TLS client works
        workers = client.scheduler_info()["workers"]
        assert workers and all(w.startswith("tls://127.0.0.1:") for w in workers)
        assert "127.0.0.1" in client.dashboard_link  # dashboard bound to loopback
        plain = address.replace("tls://", "tcp://")
        with pytest.raises((OSError, TimeoutError)):
            Client(plain, timeout="3s")  # plain TCP to the TLS port: refused
        stranger = make_certs(tmp_path / "stranger").security()  # not signed by the CA
        with pytest.raises((OSError, TimeoutError)):
            Client(address, timeout="3s", security=stranger)  # TLS, unknown certificate: refused


def test_cluster_profile_loads_tls_paths_relative_to_it(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "n_workers: 3\ntls: {ca_file: t/ca.pem, cert_file: t/c.pem, key_file: t/c.key}\n"
    )
    opts = load_cluster_profile(tmp_path / "p.yaml")
    assert opts.n_workers == 3 and opts.dashboard_address.startswith("127.0.0.1")
    assert opts.tls is not None and opts.tls.ca_file == (tmp_path / "t/ca.pem").resolve()
    (tmp_path / "bad.yaml").write_text("n_workers: 2\nsecure: yes\n")
    with pytest.raises(SpecError, match="unknown key"):
        load_cluster_profile(tmp_path / "bad.yaml")
    (tmp_path / "tag.yaml").write_text("n_workers: !!python/object:os.system {}\n")
    with pytest.raises(SpecError):
        load_cluster_profile(tmp_path / "tag.yaml")


def test_bundled_tls_profile_parses():
    opts = load_cluster_profile(ROOT / "cluster" / "tls-local.yaml")
    assert opts.tls is not None and opts.dashboard_address.startswith("127.0.0.1")
