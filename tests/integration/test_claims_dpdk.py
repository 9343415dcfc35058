"""README's claims on the DPDK stack that no other test checks: "window
scaling ... NewReno". beacond with backend = dpdk on a tap in a namespace of
its own (test_dpdk.py's dpdk_server), crafted segments from
claims_dpdk_packets.py, and the stack's own counters from /metrics.

Needs root, `ip netns`, a DPDK build and python3-scapy; skipped otherwise.
DPDK runs are costly: run this under `flock /tmp/beacon-dpdk.lock`.
"""

import json
import os
import subprocess

import pytest

from test_dpdk import (HERE, SCAPY_PYTHON, SERVER_IP, _have_scapy, _ip_netns_works,
                       dpdk_server, net_counters)
from trustkit import wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, a tap)"),
    pytest.mark.skipif(not _ip_netns_works(), reason="`ip netns` is unavailable"),
]


@pytest.fixture(scope="module")
def csrv(tmp_path_factory, pki):
    if not _have_scapy():
        pytest.skip("python3-scapy is not installed")
    with dpdk_server(tmp_path_factory, pki, "c") as srv:
        yield srv


def packets(srv, check):
    p = subprocess.run(["ip", "netns", "exec", srv.ns, SCAPY_PYTHON,
                        str(HERE / "claims_dpdk_packets.py"), srv.tap, SERVER_IP,
                        str(srv.port), check],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(HERE)})
    assert p.returncode == 0, (f"{check}: {p.stderr.decode(errors='replace')}\n"
                               f"beacond:\n{srv.stderr()[-3000:]}")
    return json.loads(p.stdout.decode().strip().splitlines()[-1])


def test_window_scale_offered_only_when_asked(csrv):
    r = packets(csrv, "wscale_offer")
    assert r["offered"] == 3, r  # RCV_WS: a 256 KiB receive buffer in a 16-bit field
    assert r["not_offered"] is None, r


def test_peer_window_scale_applied(csrv):
    r = packets(csrv, "wscale_applied")
    assert r["held"] == 128, f"window field 1 << scale 7 is 128 bytes: {r}"
    assert r["after_opening"] >= 128 + 536, r  # one whole segment more (MSS 536)
    csrv.assert_alive()


def test_newreno_fast_retransmit_and_partial_ack(csrv):
    before = net_counters(csrv)
    r = packets(csrv, "newreno")
    # /metrics shows the stack's counters at most 0.1 s late: wait for them
    after = wait_until(lambda: (lambda n: n if n["tcp_retransmits"] >= before["tcp_retransmits"] + 2
                                else None)(net_counters(csrv)), 5) or net_counters(csrv)
    moved = {k: after[k] - before[k] for k in ("tcp_fast_retransmits", "tcp_retransmits",
                                               "tcp_rto_expiries")}
    assert r["first_back"] and r["second_back"], r
    assert moved == {"tcp_fast_retransmits": 1, "tcp_retransmits": 2,
                     "tcp_rto_expiries": 0}, (moved, r)
