"""Fixtures for the beacond integration tests.

- pki: the demo PKI (config/demo-pki.sh), generated once per session.
- server: one beacond per test module. A module may set
  SERVER_CONFIG = {"limits": {"max_body": "1M"}, ...} to change its config.
- start_server(config=None, start=True): a factory for servers with their own
  config, stopped at the end of the test.
- big_file: 10 MiB of random bytes, written once.

BEACON_TEST_BACKEND=dpdk makes `server` and `start_server` run beacond with
backend = dpdk on a tap (helpers.new_server); pytest then runs inside a
network namespace of its own (tests/integration/over_dpdk.sh), where every
client reaches beacond through the tap. Without root, a DPDK build or that
namespace, every test is skipped with the reason.

A server counts as started when beacond tells READY=1 through NOTIFY_SOCKET
(helpers.Server.start): its listeners, control socket and admin listener
are up and privileges dropped, never merely "accepts TCP". Every server is
stopped with SIGTERM and must exit 0 within 10 s. After each test every
running server must still be alive.
"""

import os
import subprocess

import pytest

from helpers import BACKEND, BEACOND, DEMO_PKI, new_server

_running = []


def _dpdk_unavailable():
    """Why the DPDK backend cannot run here, or None."""
    if os.geteuid() != 0:
        return "backend = dpdk needs root (a tap)"
    if BEACOND.exists() and b"this build has no DPDK" in BEACOND.read_bytes():
        return f"{BEACOND} is built without DPDK"
    try:
        ns = subprocess.run(["ip", "netns", "identify"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL).stdout.strip()
    except OSError:
        ns = b""
    if not ns:
        return "backend = dpdk: run pytest inside a namespace, with tests/integration/over_dpdk.sh"
    return None


# The files that take longest in one run (seconds, normal build, 2 cores),
# most first. Run in parallel (BEACON_TEST_JOBS), files go to workers in
# collection order: a long file collected last would run alone at the end.
_LONGEST_FIRST = ("test_dpdk", "test_download_http", "test_resumption_attacks",
                  "test_mirror", "test_consume", "test_upstream", "test_crash",
                  "test_drain", "test_claims_tls", "test_dpdk_offload")


def _longest_first(items):
    def rank(item):
        name = item.module.__name__.rsplit(".", 1)[-1]
        return _LONGEST_FIRST.index(name) if name in _LONGEST_FIRST else len(_LONGEST_FIRST)
    items.sort(key=rank)  # stable: a file's tests stay together and in order


def pytest_collection_modifyitems(config, items):
    if BACKEND != "dpdk":
        _longest_first(items)
        return
    why = _dpdk_unavailable()
    if why:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    out = tmp_path_factory.mktemp("pki")
    p = subprocess.run(["bash", str(DEMO_PKI), str(out)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    assert p.returncode == 0, f"demo-pki.sh failed:\n{p.stdout.decode()}"
    assert (out / ".complete").exists()
    return out


@pytest.fixture(scope="session")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "10MiB.bin"
    path.write_bytes(os.urandom(10 * 1024 * 1024))
    return path


def _start(tmp_path_factory, pki, config, start=True, raw_config=None):
    srv = new_server(tmp_path_factory.mktemp("beacond"), pki, config, raw_config)
    if start:
        srv.start()
        _running.append(srv)
    return srv


def _stop(srv):
    if srv in _running:
        _running.remove(srv)
    srv.stop()


@pytest.fixture(scope="module")
def server(request, tmp_path_factory, pki):
    config = getattr(request.module, "SERVER_CONFIG", None)
    srv = _start(tmp_path_factory, pki, config)
    yield srv
    _stop(srv)


@pytest.fixture
def start_server(tmp_path_factory, pki):
    started = []

    def factory(config=None, start=True, raw_config=None):
        srv = _start(tmp_path_factory, pki, config, start, raw_config)
        started.append(srv)
        return srv

    yield factory
    errors = []
    for srv in started:
        try:
            _stop(srv)
        except AssertionError as e:
            errors.append(str(e))
    assert not errors, "\n".join(errors)


@pytest.fixture(autouse=True)
def _servers_stay_alive():
    yield
    for srv in list(_running):
        if srv.proc is not None:  # a test may stop a server on purpose
            srv.assert_alive()
