"""Crafted TCP for README's DPDK-stack claims (window scaling, NewReno), run
by test_claims_dpdk.py inside the test's network namespace, as
dpdk_packets.py is (same arguments; it supplies the link and helpers):

    ip netns exec NS python3 claims_dpdk_packets.py IFACE SERVER_IP PORT CHECK

The server's data comes from a real TLS 1.3 ClientHello (Python's ssl
module, never finished): beacond answers it with its whole first flight
(ServerHello ... Finished, about 1.5 KiB).
"""

import json
import random
import ssl

from dpdk_packets import CHECK, IP, ME, PORT, SERVER, TCP, Link, tcp_from_server


def client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def wscale_of(p):
    for name, value in p[TCP].options:
        if name == "WScale":
            return value
    return None


class Peer:
    """A hand-driven connection with the options this file needs."""

    def __init__(self, link, mss=536, wscale=None):
        self.link = link
        self.sport = random.randint(20000, 60000)
        self.seq = random.randint(0, 2**32 - 1)
        self.match = tcp_from_server(self.sport)
        self.mss = mss
        self.wscale = wscale

    def seg(self, flags, ack=None, window=65535, payload=b""):
        t = TCP(sport=self.sport, dport=PORT, flags=flags, seq=self.seq,
                ack=self.rcv if ack is None else ack, window=window)
        return IP(src=ME, dst=SERVER) / t / payload if payload else IP(src=ME, dst=SERVER) / t

    def open(self, window=65535):
        opts = [("MSS", self.mss)]
        if self.wscale is not None:
            opts.append(("WScale", self.wscale))
        self.link.send(IP(src=ME, dst=SERVER) / TCP(sport=self.sport, dport=PORT, flags="S",
                                                   seq=self.seq, window=window, options=opts))
        sa = self.link.recv_until(self.match, 2)
        assert sa is not None and sa[TCP].flags == "SA", f"no SYN-ACK: {sa!r}"
        self.seq = (self.seq + 1) % 2**32
        self.isn = sa[TCP].seq
        self.rcv = (sa[TCP].seq + 1) % 2**32
        self.link.send(self.seg("A", window=window))
        return sa

    def send(self, data, window=65535):
        self.link.send(self.seg("PA", window=window, payload=data))
        self.seq = (self.seq + len(data)) % 2**32

    def data_segments(self, until, timeout):
        """Server segments with payload (offset from its ISN+1, length),
        collected until `until(list)` holds or `timeout` passes."""
        got = []
        while not until(got):
            p = self.link.recv_until(lambda p: self.match(p) and len(p[TCP].payload) > 0,
                                     timeout)
            if p is None:
                break
            got.append(((p[TCP].seq - self.rcv) % 2**32, len(p[TCP].payload)))
        return got

    def reset(self):
        self.link.send(self.seg("R", ack=0))


def high_water(segs):
    return max((off + n for off, n in segs), default=0)


def check_wscale_offer(link):
    """RFC 7323 2.2: a SYN-ACK carries WScale only when the SYN did."""
    with_ws = Peer(link, wscale=7)
    sa = with_ws.open()
    with_ws.reset()
    without = Peer(link)
    sb = without.open()
    without.reset()
    return {"offered": wscale_of(sa), "not_offered": wscale_of(sb)}


def check_wscale_applied(link):
    """Our window is read with our scale: window field 1 with WScale 7 is
    128 bytes, so beacond's ~1.5 KiB flight stops at exactly 128 bytes
    (unscaled it would be 1 byte; a stack that ignored it, all of it).
    Field 64 then opens 8 KiB and the next full segment comes."""
    peer = Peer(link, wscale=7)
    peer.open(window=1)
    peer.send(client_hello(), window=1)
    first = peer.data_segments(lambda s: high_water(s) >= 128, 3)
    extra = peer.data_segments(lambda s: False, 1.5)  # anything past the window?
    held = high_water(first + extra)
    peer.link.send(peer.seg("A", ack=(peer.rcv + held) % 2**32, window=64))
    more = peer.data_segments(lambda s: high_water(s) > held, 3)
    peer.reset()
    return {"held": held, "after_opening": high_water(more)}


def check_newreno(link):
    """Three duplicate ACKs retransmit the first segment at once; a partial
    ACK (RFC 6582) then retransmits the next hole without waiting for more
    duplicates or a timeout. The test reads the stack's counters around it:
    fast retransmits +1, retransmissions +2, no RTO expiry."""
    peer = Peer(link, mss=536)  # the stack takes no smaller MSS
    peer.open()
    peer.send(client_hello())
    # the flight ends with its one segment shorter than the MSS
    got = peer.data_segments(lambda s: any(n < peer.mss for _, n in s), 3)
    flight = sorted(set(got))
    assert len(flight) >= 2, f"a flight of {flight}: too short for the check"
    for _ in range(3):  # acknowledging nothing of it: three duplicates
        link.send(peer.seg("A"))
    again = peer.data_segments(lambda s: any(off == flight[0][0] for off, _ in s), 0.9)
    first_back = any(off == flight[0][0] for off, _ in again)
    partial = (peer.rcv + flight[0][0] + flight[0][1]) % 2**32
    link.send(peer.seg("A", ack=partial))
    after = peer.data_segments(lambda s: any(off == flight[1][0] for off, _ in s), 0.9)
    second_back = any(off == flight[1][0] for off, _ in after)
    peer.reset()
    return {"flight": flight, "first_back": first_back, "second_back": second_back}


CHECKS = {"wscale_offer": check_wscale_offer, "wscale_applied": check_wscale_applied,
          "newreno": check_newreno}

if __name__ == "__main__":
    print(json.dumps(CHECKS[CHECK](Link())))
