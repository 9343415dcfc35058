"""beacond's own command line: --help, --version (also logged at
start-up), a usage error for an unknown option, and a start without -c
that says it runs the embedded demo configuration."""
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from certkit import NOW, cn, make_cert
from cryptography.x509.oid import ExtendedKeyUsageOID
from helpers import BEACOND, REPO, new_server


def project_version():
    m = re.search(r"version\s*:\s*'([^']+)'", (REPO / "meson.build").read_text())
    return m.group(1)


def run(*args, cwd=None):
    return subprocess.run([str(BEACOND), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=60)


def test_version():
    p = run("--version")
    assert p.returncode == 0 and p.stdout == f"beacond {project_version()}\n", p


def test_help_lists_every_option():
    p = run("--help")
    assert p.returncode == 0, p
    for opt in ("-c FILE", "-t", "-v", "--help", "--version"):
        assert opt in p.stdout, (opt, p.stdout)


def test_unknown_option_is_a_usage_error():
    p = run("--bogus")
    assert p.returncode == 2, p
    assert "unrecognized option '--bogus'" in p.stderr and "usage: beacond" in p.stderr, p.stderr


def test_version_logged_at_start_up(server):
    assert f"beacond[info]: beacond {project_version()}, {server.conf}" in server.stderr(), \
        server.stderr()


def test_no_config_says_demo(tmp_path):
    p = run("-t", cwd=tmp_path)
    assert "no -c: the embedded demo configuration (files under .demo/)" in p.stderr, p.stderr


# --------------------------------------------------------------------------
# -t checks the server certificate as agents will (and so do start and reload)

def server_cert_check(tmp_path_factory, pki, cert):
    srv = new_server(tmp_path_factory.mktemp("beacond"), pki, None, None)
    crt, key = cert.write(srv.dir, "own-server")
    srv.conf.write_text(srv.config_text.replace(str(Path(pki) / "server.pem"), str(crt))
                        .replace(str(Path(pki) / "server.key"), str(key)))
    return run("-t", "-c", str(srv.conf)), crt


def server_cert(**kw):
    kw.setdefault("eku", (ExtendedKeyUsageOID.SERVER_AUTH,))
    return make_cert(cn("beacon.example"), **kw)


@pytest.mark.parametrize("case,want", [
    ("expired", "expired on "),
    ("not-yet", "not valid before "),
    ("client-only-eku", "its extended key usage leaves out serverAuth"),
])
def test_check_refuses_a_server_cert_agents_would(tmp_path_factory, pki, case, want):
    cert = {
        "expired": lambda: server_cert(not_before=NOW - timedelta(days=30),
                                       not_after=NOW - timedelta(days=1)),
        "not-yet": lambda: server_cert(not_before=NOW + timedelta(days=1),
                                       not_after=NOW + timedelta(days=30)),
        "client-only-eku": lambda: server_cert(eku=(ExtendedKeyUsageOID.CLIENT_AUTH,)),
    }[case]()
    p, crt = server_cert_check(tmp_path_factory, pki, cert)
    assert p.returncode == 1, p
    assert f"cert {crt}: {want}" in p.stderr, p.stderr


@pytest.mark.parametrize("eku", ["serverAuth", "none"])
def test_check_passes_a_usable_server_cert(tmp_path_factory, pki, eku):
    cert = server_cert(eku=(ExtendedKeyUsageOID.SERVER_AUTH,) if eku == "serverAuth" else None)
    p, _ = server_cert_check(tmp_path_factory, pki, cert)
    assert p.returncode == 0, p.stderr


@pytest.mark.parametrize("where,why", [("missing", "No such file or directory"),
                                       ("file", "not a directory")])
def test_check_refuses_an_unusable_control_socket_dir(tmp_path_factory, pki, where, why):
    srv = new_server(tmp_path_factory.mktemp("beacond"), pki, None, None)
    parent = srv.dir / "run"
    if where == "file":
        parent.write_text("a file where the directory should be\n")
    sock = parent / "control.sock"
    srv.conf.write_text(srv.config_text.replace(str(srv.control_socket), str(sock)))
    p = run("-t", "-c", str(srv.conf))
    assert p.returncode == 1, p
    assert f"control_socket {sock}: directory {parent}: {why}" in p.stderr, p.stderr
