"""The DPDK stack's counters on /metrics: beacond with backend = dpdk on a
tap in a namespace of its own (test_dpdk.py's set-up, 198.18.0.0/15 only),
its admin listener on the namespace's loopback. Crafted packets
(dpdk_packets.py) and a real client provoke counted events; the
beacond_net_*_total counters move by what was sent.
"""

import pytest

import test_dpdk
from test_dpdk import _have_scapy, dpdk_server, metrics_text
from test_dpdk import net_counters as net
from trustkit import parse_metrics, wait_until

pytestmark = test_dpdk.pytestmark


@pytest.fixture(scope="module")
def msrv(tmp_path_factory, pki):
    with dpdk_server(tmp_path_factory, pki, "m") as srv:
        yield srv


def test_every_counter_has_help_and_type(msrv):
    text = metrics_text(msrv)
    names = [ln.split()[0] for ln in text.splitlines() if ln.startswith("beacond_net_")]
    for must in ("rx_frames", "tcp_bad_csum", "ip_bad_csum", "ip_fragments", "syn_cookies_sent",
                 "syn_cookies_bad", "tcp_rst_sent", "tcp_challenge_acks", "tcp_unacceptable",
                 "tcp_retransmits", "icmp_echo_replies", "arp_replies_sent",
                 "tcp_time_wait_reused", "tx_frames"):
        assert f"beacond_net_{must}_total" in names, must
    assert len(names) == len(set(names)), "a counter twice"
    for n in names:
        assert n.endswith("_total"), n
        assert f"\n# HELP {n} DPDK stack: " in text, f"{n}: no HELP"
        assert f"\n# TYPE {n} counter\n" in text, f"{n}: no TYPE"


def worker_seconds(srv):
    """({worker: busy s}, {worker: work s}) from one scrape."""
    busy, work = {}, {}
    for (name, labels), v in parse_metrics(metrics_text(srv)).items():
        if name == "beacond_worker_busy_seconds_total":
            busy[labels] = v
        elif name == "beacond_worker_work_seconds_total":
            work[labels] = v
    return busy, work


def test_polling_worker_work_is_not_its_spin(msrv):
    """A polling worker is busy all the time; the time of its turns that
    did work leaves the empty turns out: over a span that holds a request
    and a second of spinning, work grows (the request) and by less than
    busy (the spin)."""
    busy0, work0 = worker_seconds(msrv)
    assert busy0 and set(busy0) == set(work0), (busy0, work0)
    p = msrv.curl("/ManageSoftDL/policy.xml")
    assert p.returncode == 0, p.stderr.decode()

    def spun_a_second():
        return sum(worker_seconds(msrv)[0].values()) >= sum(busy0.values()) + 1

    assert wait_until(spun_a_second, 60)
    busy1, work1 = worker_seconds(msrv)
    grew = {w: (busy1[w] - busy0[w], work1[w] - work0[w]) for w in busy1}
    assert sum(d[1] for d in grew.values()) > 0, grew
    assert all(d[1] < d[0] for d in grew.values()), grew


def test_counters_move(msrv):
    """Each provoked event moves its counter: exactly, where nothing else
    in the namespace sends that kind of packet; at least, where the
    peer's own traffic may add to it."""
    if not _have_scapy():
        pytest.skip("python3-scapy is not installed")
    before = net(msrv)
    msrv.packets("counted")          # bad IP checksum, fragment, closed port, echo
    msrv.packets("bad_checksum")     # two bad TCP checksums, one connection
    msrv.packets("rst_window")       # out-of-window RST, challenge ACKs, RSTs in
    msrv.packets("rto_from_timestamps")  # two unACKed answers: retransmits
    p = msrv.curl("/ManageSoftDL/policy.xml")  # a normal connection
    assert p.returncode == 0, p.stderr.decode()

    exact = {"ip_bad_csum": 1, "ip_fragments": 1, "icmp_in": 1, "icmp_echo_replies": 1,
             "tcp_bad_csum": 2}
    at_least = {"tcp_unacceptable": 1, "tcp_no_listener": 1, "tcp_rst_sent": 1, "tcp_rst_in": 3,
                "tcp_challenge_acks": 2, "syn_cookies_sent": 5, "tcp_accepted": 5,
                "tcp_retransmits": 2, "tcp_rto_expiries": 2, "arp_in": 4,
                "arp_replies_sent": 4, "tcp_in": 20, "ip_in": 20, "rx_frames": 20,
                "tx_frames": 20}

    def delta():
        now = net(msrv)
        return {k: now[k] - before[k] for k in now}

    def moved():
        d = delta()
        return (all(d[k] >= v for k, v in exact.items())
                and all(d[k] >= v for k, v in at_least.items()))

    # The workers publish every 100 ms.
    assert wait_until(moved, 3), delta()
    d = delta()
    for k, v in exact.items():
        assert d[k] == v, (k, d)
    assert all(v >= 0 for v in d.values()), d  # counters only grow
    msrv.assert_alive()
