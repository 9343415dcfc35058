"""The rejection matrix (issue 7): every bad-certificate and bad-request
case against both transports, with the exact outcome: for a certificate,
no HTTP response and the refusal's reason in the server's log; for a
request, the HTTP status. The same curl client drives both, so a regression
in any layer shows in the transport where it happens."""

import os
import subprocess

import pytest

from helpers import unique_name
from test_dpdk import _ip_netns_works, dpdk_server

LIMITS = {"limits": {"max_body": "4k", "max_target": "256", "max_header_bytes": "4k"}}

# certificate -> the auth result the server logs for it
CERT_CASES = {
    None: "no_certificate",
    "untrusted": "unknown_issuer",
    "expired": "expired",
    "notyet": "not_yet_valid",
    "noclientauth": "wrong_usage",
    "nodigsig": "wrong_usage",
}

UP = "/ManageSoftRL/Inventories/"

# name -> (curl arguments, path, expected status)
REQUEST_CASES = {
    "ok": (["-T", "{small}"], UP + "ok-{n}.ndi", 201),
    "outside-trees": (["-T", "{small}"], "/elsewhere/{n}.ndi", 404),
    "wrong-method": (["-X", "DELETE"], UP + "{n}.ndi", 405),
    "get-on-upload": ([], UP + "{n}.ndi", 405),
    "bad-name": (["-T", "{small}"], UP + "a%00b-{n}.ndi", 400),
    "traversal": (["-T", "{small}"], UP + "%2e%2e", 400),
    "too-large": (["-T", "{large}"], UP + "big-{n}.ndi", 413),
    "target-too-long": ([], UP + "x" * 400, 414),
    "header-too-large": (["-H", "X-Pad: " + "p" * 5000], "/ManageSoftDL/policy.xml", 431),
    "missing-download": ([], "/ManageSoftDL/missing-{n}.xml", 404),
}


class KernelTarget:
    def __init__(self, srv):
        self.srv = srv

    def curl(self, path, *args, name="agent1"):
        cmd = ["curl", "-sS", "--max-time", "20",
               "--resolve", f"localhost:{self.srv.port}:{self.srv.host}",
               "--cacert", str(self.srv.pki / "server-ca.pem"), "-o", "/dev/null",
               "-w", "%{http_code}"]
        if name:
            cmd += ["--cert", str(self.srv.pki / f"{name}.pem"),
                    "--key", str(self.srv.pki / f"{name}.key")]
        cmd += list(args) + [f"https://localhost:{self.srv.port}{path}"]
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)


class DpdkTarget:
    def __init__(self, srv):
        self.srv = srv

    def curl(self, path, *args, name="agent1"):
        return self.srv.curl(path, "-o", "/dev/null", "-w", "%{http_code}", *args, name=name,
                             timeout=30)


@pytest.fixture(scope="module", params=["kernel", "dpdk"])
def target(request, tmp_path_factory, pki):
    if request.param == "kernel":
        from helpers import Server
        srv = Server(tmp_path_factory.mktemp("matrix-kernel"), pki, LIMITS)
        srv.start()
        yield KernelTarget(srv)
        srv.stop()
        return
    if os.geteuid() != 0 or not _ip_netns_works():
        pytest.skip("the DPDK transport needs root and ip netns")
    with dpdk_server(tmp_path_factory, pki, "x", LIMITS) as srv:
        yield DpdkTarget(srv)


@pytest.fixture(scope="module")
def bodies(tmp_path_factory):
    d = tmp_path_factory.mktemp("matrix-bodies")
    (d / "small").write_bytes(os.urandom(1000))
    (d / "large").write_bytes(os.urandom(8192))
    return d


def code_of(p):
    out = p.stdout.decode().strip()
    return int(out) if out.isdigit() else 0


@pytest.mark.parametrize("cert", list(CERT_CASES), ids=[c or "no-cert" for c in CERT_CASES])
def test_certificate_refused(target, bodies, cert):
    name = unique_name("matrix-cert")
    before = target.srv.stderr().count(f"({CERT_CASES[cert]})")
    p = target.curl(UP + name, "-T", str(bodies / "small"), name=cert)
    assert code_of(p) == 0, f"{cert}: got an HTTP response {p.stdout!r}"
    assert p.returncode != 0
    log = target.srv.stderr()
    assert log.count(f"({CERT_CASES[cert]})") == before + 1, log[-2000:]
    assert not [r for r in target.srv.uploads() if r.get("name") == name]


@pytest.mark.parametrize("case", list(REQUEST_CASES))
def test_request_status(target, bodies, case):
    args, path, want = REQUEST_CASES[case]
    n = unique_name("m").split(".")[0]
    args = [a.format(small=bodies / "small", large=bodies / "large") for a in args]
    p = target.curl(path.replace("{n}", n), *args)
    assert code_of(p) == want, f"{case}: {p.stdout!r} {p.stderr.decode(errors='replace')}"
    if want != 201:
        assert not [r for r in target.srv.uploads() if n in r.get("name", "")]
