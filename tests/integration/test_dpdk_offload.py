"""Checksums over DPDK, both ways the stack does them: offloaded to the port
where it offers that (the tap PMD offers IPv4 and TCP checksums each way,
which it computes itself), and in software ([dpdk] checksum_offload = no).
Each path: the start-up log says which, what leaves carries right sums
(scapy recomputes them), bad sums that arrive are dropped and counted, and
an upload arrives whole. test_dpdk.py's set-up: a tap in a namespace of
its own, 198.18.0.0/15 only.
"""

import re

import pytest

import test_dpdk
from helpers import free_port, unique_name
from test_dpdk import _have_scapy, assert_stored, dpdk_server, payloads  # noqa: F401
from test_dpdk_metrics import net
from trustkit import wait_until

pytestmark = test_dpdk.pytestmark

LOGGED = {"yes": "checksums: rx ipv4+tcp offloaded, tx ipv4+tcp offloaded",
          "no": "checksums: rx software, tx software"}


@pytest.fixture(scope="module", params=["yes", "no"], ids=["offload", "software"])
def csrv(request, tmp_path_factory, pki):
    mport = free_port()
    conf = {"server": {"metrics": f"127.0.0.1:{mport}"},
            "dpdk": {"checksum_offload": request.param}}
    with dpdk_server(tmp_path_factory, pki, "c" + request.param[0], conf) as srv:
        srv.metrics_port = mport
        srv.offload = request.param
        yield srv


def test_logged(csrv):
    m = re.search(r"dpdk port 0 \(\S+\): MAC .*", csrv.stderr())
    assert m, csrv.stderr()[-2000:]
    assert LOGGED[csrv.offload] in m.group(0), m.group(0)


def test_sums_on_the_wire(csrv):
    if not _have_scapy():
        pytest.skip("python3-scapy is not installed")
    assert csrv.packets("wire_checksums") == {"echo": True, "syn_ack": True, "ack": True}


def test_bad_sums_dropped_and_counted(csrv):
    if not _have_scapy():
        pytest.skip("python3-scapy is not installed")
    before = net(csrv)
    csrv.packets("bad_checksum")  # two bad TCP sums
    csrv.packets("counted")       # one bad IPv4 header sum

    def delta():
        now = net(csrv)
        return {k: now[k] - before[k] for k in ("tcp_bad_csum", "ip_bad_csum")}

    assert wait_until(lambda: delta() == {"tcp_bad_csum": 2, "ip_bad_csum": 1}, 3), delta()


def test_upload(csrv, payloads):  # noqa: F811
    path = payloads(4 << 20)
    name = unique_name(f"dpdk-csum-{csrv.offload}")
    code, p = csrv.upload(path, name)
    assert code == 201, p.stderr.decode() + csrv.stderr()[-2000:]
    assert_stored(csrv, name, path)
    csrv.assert_alive()
