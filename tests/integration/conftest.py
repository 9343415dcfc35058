"""Fixtures for the beacond integration tests.

- pki: the demo PKI (config/demo-pki.sh), generated once per session.
- server: one beacond per test module. A module may set
  SERVER_CONFIG = {"limits": {"max_body": "1M"}, ...} to change its config.
- start_server(config=None, start=True): a factory for servers with their own
  config, stopped at the end of the test.
- big_file: 10 MiB of random bytes, written once.

Every server is stopped with SIGTERM and must exit 0 within 10 s. After each
test every running server must still be alive.
"""

import os
import subprocess

import pytest

from helpers import DEMO_PKI, Server

_running = []


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
    srv = Server(tmp_path_factory.mktemp("beacond"), pki, config, raw_config)
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
