"""Crafted packets against beacond's DPDK stack (python3-scapy), run by
test_dpdk.py inside the test's network namespace:

    ip netns exec NS python3 dpdk_packets.py IFACE SERVER_IP PORT CHECK

Each CHECK prints one JSON line of results and exits 0, or fails with an
assertion (exit 1). Sources are 198.18.0.0/15 addresses that the kernel side
of the tap does not own, so its TCP never answers (or resets) our replies.
"""

import fcntl
import heapq
import json
import os
import random
import select
import socket
import struct
import sys
import time

from scapy.all import ARP, ICMP, IP, TCP, Ether, Raw, conf  # noqa: E402

conf.verb = 0

IFACE, SERVER, PORT, CHECK = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ME = "198.18.0.77"


class Link:
    """An L2 socket on the tap's kernel side, with the server's MAC."""

    def __init__(self):
        self.sock = conf.L2socket(iface=IFACE)
        self.mac = self.arp(SERVER)
        assert self.mac, "no ARP reply from the server"

    def send(self, pkt):
        self.sock.send(Ether(dst=self.mac or "ff:ff:ff:ff:ff:ff") / pkt)

    def recv_until(self, match, timeout):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                return None
            r, _, _ = select.select([self.sock], [], [], left)
            if not r:
                return None
            p = self.sock.recv()
            if p is not None and match(p):
                return p

    def arp(self, ip):
        self.sock.send(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=ip, psrc=ME))
        p = self.recv_until(lambda p: ARP in p and p[ARP].op == 2 and p[ARP].psrc == ip, 2)
        return p[ARP].hwsrc if p else None


def tcp_from_server(sport):
    def match(p):
        return (IP in p and TCP in p and p[IP].src == SERVER and p[IP].dst == ME
                and p[TCP].dport == sport)
    return match


class Conn:
    """A hand-driven TCP connection to the server."""

    def __init__(self, link, ts=None):
        """ts: our first TSval; every segment then carries a timestamp
        (self.ts, echoing self.ts_echo) unless told otherwise."""
        self.link = link
        self.sport = random.randint(20000, 60000)
        self.seq = random.randint(0, 2**32 - 1)
        self.match = tcp_from_server(self.sport)
        self.ts = ts
        self.ts_echo = 0

    def seg(self, flags, seq=None, ack=None, payload=b"", window=65535, ts=None):
        opts = []
        tsval = self.ts if ts is None else ts
        if tsval is not None and tsval is not False:
            opts = [("NOP", None), ("NOP", None), ("Timestamp", (tsval, self.ts_echo))]
        t = TCP(sport=self.sport, dport=PORT, flags=flags,
                seq=self.seq if seq is None else seq,
                ack=self.rcv if ack is None else ack, window=window, options=opts)
        return IP(src=ME, dst=SERVER) / t / Raw(payload) if payload else IP(src=ME, dst=SERVER) / t

    def expect(self, timeout=1.0):
        return self.link.recv_until(self.match, timeout)

    def open(self):
        self.rcv = 0
        opts = [("MSS", 1460)]
        if self.ts is not None:
            opts += [("SAckOK", b""), ("Timestamp", (self.ts, 0))]
        self.link.send(IP(src=ME, dst=SERVER) / TCP(sport=self.sport, dport=PORT, flags="S",
                                                   seq=self.seq, options=opts))
        sa = self.expect()
        assert sa is not None and sa[TCP].flags == "SA", f"no SYN-ACK: {sa!r}"
        assert sa[TCP].ack == (self.seq + 1) % 2**32
        self.seq = (self.seq + 1) % 2**32
        self.rcv = (sa[TCP].seq + 1) % 2**32
        if self.ts is not None and timestamp(sa):
            self.ts_echo = timestamp(sa)[0]
        self.link.send(self.seg("A"))
        return sa

    def send_data(self, data):
        self.link.send(self.seg("PA", payload=data))
        self.seq = (self.seq + len(data)) % 2**32


def timestamp(p):
    """(TSval, TSecr) of a segment, or None."""
    for name, value in p[TCP].options:
        if name == "Timestamp":
            return value
    return None


def ack_for(conn, want_ack, timeout=1.0):
    """The server's first segment that ACKs `want_ack`, or None."""
    return conn.link.recv_until(
        lambda p: conn.match(p) and p[TCP].ack == want_ack and "R" not in p[TCP].flags, timeout)


def reset_after_rst(c, limit_s=30):
    """After a RST that must end the connection: data sent now is answered
    with a reset. Until the server has taken the RST in (a loaded machine
    may take a while) the data is ACKed instead, so probe until a reset
    comes, within a generous bound on the test."""
    deadline = time.time() + limit_s
    while time.time() < deadline:
        c.send_data(b"\x01")
        r = c.link.recv_until(lambda p: c.match(p) and "R" in p[TCP].flags, 1.0)
        if r is not None:
            return r
    return None


def check_ping(link):
    link.send(IP(src=ME, dst=SERVER) / ICMP(id=7, seq=1) / Raw(b"beacond-ping"))
    p = link.recv_until(lambda p: ICMP in p and p[ICMP].type == 0 and p[IP].src == SERVER, 2)
    assert p is not None, "no echo reply"
    assert bytes(p[Raw]) == b"beacond-ping"
    return {"echo": True, "mac": link.mac}


def check_bad_checksum(link):
    # A SYN with a broken checksum gets nothing; the same SYN intact gets a
    # SYN-ACK.
    c = Conn(link)
    syn = IP(src=ME, dst=SERVER) / TCP(sport=c.sport, dport=PORT, flags="S", seq=c.seq)
    bad = syn.copy()
    bad[TCP].chksum = 0x1234
    link.send(bad)
    assert c.expect(0.7) is None, "answered a SYN with a bad checksum"
    # On an open connection: a data segment with a bad checksum is not
    # ACKed; the same segment intact is.
    c = Conn(link)
    c.open()
    data = b"\x16\x03\x01"  # three bytes of a TLS record header: TLS waits for more
    seg = c.seg("PA", payload=data)
    seg = IP(bytes(seg))  # computes the checksum
    seg[TCP].chksum ^= 0x5555
    link.send(seg)
    want = (c.seq + len(data)) % 2**32
    assert ack_for(c, want, 0.7) is None, "ACKed a segment with a bad checksum"
    c.send_data(data)
    assert ack_for(c, want, 1.0) is not None, "no ACK for the intact segment"
    link.send(c.seg("R"))
    return {"bad_checksum_dropped": True}


def check_rst_window(link):
    c = Conn(link)
    c.open()
    # Out of the window: dropped without a word.
    link.send(c.seg("R", seq=(c.seq + 10_000_000) % 2**32))
    r = c.expect(0.5)
    assert r is None, f"answered an out-of-window RST: {r!r}"
    # In the window but not at RCV.NXT: a challenge ACK (RFC 5961 3.2).
    link.send(c.seg("R", seq=(c.seq + 100) % 2**32))
    r = c.expect(1.0)
    assert r is not None and r[TCP].flags == "A" and r[TCP].ack == c.seq, \
        f"no challenge ACK for an in-window RST: {r!r}"
    # A SYN on the connection: a challenge ACK too (RFC 5961 4.2).
    link.send(c.seg("S", seq=(c.seq + 5) % 2**32, ack=0))
    r = c.expect(1.0)
    assert r is not None and r[TCP].flags == "A" and r[TCP].ack == c.seq, \
        f"no challenge ACK for a SYN: {r!r}"
    # Still alive: data is ACKed.
    c.send_data(b"\x16\x03")
    assert ack_for(c, c.seq, 1.0) is not None, "the connection died"
    # The RST at exactly RCV.NXT ends it: what follows gets a reset.
    link.send(c.seg("R"))
    r = reset_after_rst(c)
    assert r is not None, "the connection survived an exact RST"
    return {"out_of_window_rst_ignored": True, "challenge_acks": True}


def check_timestamps(link):
    """RFC 7323: a SYN without a timestamp gets a SYN-ACK without one; with
    one, the SYN-ACK echoes it and every segment after carries one, echoing
    the last in-order segment's; an old TSval is refused (PAWS) with an
    ACK; a segment without a timestamp is dropped; a RST needs none."""
    c = Conn(link)
    sa = c.open()
    assert timestamp(sa) is None, f"a timestamp nobody asked for: {sa!r}"
    link.send(c.seg("R"))

    c = Conn(link, ts=1000)
    sa = c.open()
    ts = timestamp(sa)
    assert ts is not None and ts[1] == 1000, f"SYN-ACK does not echo the TSval: {sa!r}"
    opts = [name for name, _ in sa[TCP].options]
    assert "SAckOK" in opts and "MSS" in opts, opts
    first_val = ts[0]
    data = b"\x16\x03\x01\x40"  # most of a TLS record header: TLS waits for more
    c.ts = 1010
    c.send_data(data[:2])
    r = ack_for(c, c.seq)
    assert r is not None, "no ACK for in-order data"
    ts = timestamp(r)
    assert ts is not None and ts[1] == 1010 and ts[0] - first_val < 2**31, \
        f"ACK does not carry or echo the timestamp: {r!r}"
    c.ts_echo = ts[0]
    # PAWS: the next bytes, with a TSval older than the last one, are an
    # old duplicate: an ACK of what came before, the bytes not taken.
    c.ts = 500
    link.send(c.seg("PA", payload=data[2:3]))
    r = c.expect(1.0)
    assert r is not None and r[TCP].ack == c.seq and "R" not in r[TCP].flags, \
        f"no ACK for a PAWS-rejected segment: {r!r}"
    assert timestamp(r)[1] == 1010, f"PAWS-rejected segment echoed: {r!r}"
    # Without a timestamp: dropped without a word.
    c.ts = False
    link.send(c.seg("PA", payload=data[2:3]))
    r = c.expect(0.7)
    assert r is None, f"answered a segment without a timestamp: {r!r}"
    # The same bytes with a current timestamp are taken.
    c.ts = 1020
    c.send_data(data[2:3])
    r = ack_for(c, c.seq)
    assert r is not None and timestamp(r)[1] == 1020, f"no ACK for the fresh segment: {r!r}"
    # A RST without a timestamp still ends it (RFC 7323 5.2).
    c.ts = False
    link.send(c.seg("R"))
    c.ts = 1030
    r = reset_after_rst(c)
    assert r is not None, "the connection survived an exact RST without a timestamp"
    return {"timestamps": True, "paws": True}


def first_retransmit_ms(link, ts, quiet_s):
    """Opens a connection (with timestamps or not), sends bytes that are no
    TLS so the server answers and closes, never ACKs that, checks that no
    retransmission comes within quiet_s of the first segment, and returns
    the time from the first segment to the first retransmission."""
    c = Conn(link, ts=ts)
    c.open()
    c.send_data(b"GET / HTTP/1.0\r\n\r\n")
    first = c.link.recv_until(lambda p: c.match(p) and (len(p[TCP].payload) > 0
                                                        or "F" in p[TCP].flags), 5.0)
    assert first is not None, "the server neither answered nor closed"
    t0 = first.time

    def retransmit(p):
        return (c.match(p) and p[TCP].seq == first[TCP].seq
                and (len(p[TCP].payload) > 0 or "F" in p[TCP].flags))
    early = c.link.recv_until(retransmit, quiet_s - (time.time() - t0))
    assert early is None, (f"retransmitted {(early.time - t0) * 1000:.0f} ms after the first "
                           f"segment, before the {quiet_s * 1000:.0f} ms minimum (ts={ts})")
    again = c.link.recv_until(retransmit, 5.0)
    assert again is not None, "no retransmission"
    link.send(c.seg("R", ts=False))
    return (again.time - t0) * 1000


def check_rto_from_timestamps(link):
    """RTT measurement: with timestamps the handshake's echo is an RTT
    sample, so the first retransmission comes after the 200 ms minimum RTO;
    without, the RTO is still the initial 1 s (SYN cookies time nothing)."""
    # One-sided and ordered, never a window: load can only delay a
    # retransmission. Without a sample the initial 1 s RTO holds (the link
    # stays quiet for 0.9 s); with one, the RTO is the sample's (200 ms
    # minimum): the two retransmissions come in that order.
    with_ts = first_retransmit_ms(link, ts=77, quiet_s=0.15)
    without = first_retransmit_ms(link, ts=None, quiet_s=0.9)
    assert with_ts < without, f"the RTO with an RTT sample ({with_ts:.0f} ms) is not the " \
                              f"shorter one (without: {without:.0f} ms)"
    return {"rto_with_ts_ms": round(with_ts), "rto_without_ms": round(without)}


def check_keepalive(link):
    """Against a server with keepalive IDLE_MS INTERVAL_MS PROBES (the
    arguments): probes are ACK-only segments at SND.UNA - 1, the first
    after IDLE of silence; an answer restarts the silence; PROBES
    unanswered ones, INTERVAL apart, and the server resets."""
    idle, interval = int(sys.argv[5]) / 1000, int(sys.argv[6]) / 1000
    want = int(sys.argv[7])
    c = Conn(link, ts=5000)
    c.open()

    def probe(p):
        return (c.match(p) and p[TCP].flags == "A" and p[TCP].seq == (c.rcv - 1) % 2**32
                and len(p[TCP].payload) == 0)

    # Timers one-sided, as an order: the link stays quiet for most of the
    # idle time (a probe never comes early); that it comes at all is waited
    # for generously (load only makes it later).
    early = c.link.recv_until(probe, idle * 0.8)
    assert early is None, "a keepalive probe before the idle time"
    p = c.link.recv_until(probe, idle + 30)
    assert p is not None, "no keepalive probe"
    assert timestamp(p) is not None, "a probe without the negotiated timestamp"
    link.send(c.seg("A"))
    early = c.link.recv_until(probe, idle * 0.8)
    assert early is None, "an answer did not restart the silence"
    p = c.link.recv_until(probe, idle + 30)
    assert p is not None, "no probe after the answered one"
    probes = 1
    while True:
        early = c.link.recv_until(c.match, interval * 0.7)
        assert early is None, f"a segment closer than the interval after probe {probes}: {early!r}"
        q = c.link.recv_until(c.match, interval + 30)
        assert q is not None, f"neither probe nor reset after {probes} probes"
        if "R" in q[TCP].flags:
            break
        assert probe(q), f"not a probe: {q!r}"
        probes += 1
    return {"probes": probes, "reset": True}


def check_syn_flood(link):
    """Sends SYNs from spoofed 198.18.x.y sources for `seconds`."""
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 3000
    pkts = []
    for _ in range(count):
        src = f"198.18.{random.randint(2, 254)}.{random.randint(1, 254)}"
        pkts.append(Ether(dst=link.mac) / IP(src=src, dst=SERVER) /
                    TCP(sport=random.randint(1024, 65535), dport=PORT, flags="S",
                        seq=random.randint(0, 2**32 - 1)))
    raw = [bytes(p) for p in pkts]
    t0 = time.time()
    for _ in range(3):
        for r in raw:
            link.sock.send(r)
    return {"syns": 3 * count, "seconds": round(time.time() - t0, 2)}


def check_counted(link):
    """One of each of a few events that the stack counts and answers with
    silence or a reset, for test_dpdk_metrics.py to find in /metrics: an
    IPv4 header with a bad checksum, a fragment, a SYN to a port we do not
    serve (a reset), an ICMP echo (a reply)."""
    echo = IP(src=ME, dst=SERVER) / ICMP(id=9, seq=1) / Raw(b"counted")
    bad = IP(bytes(echo))
    bad.chksum ^= 0x5555
    link.send(bad)
    frag = IP(src=ME, dst=SERVER, flags="MF", id=4242) / ICMP(id=9, seq=2) / Raw(b"frag")
    link.send(frag)
    replied = link.recv_until(lambda p: ICMP in p and p[ICMP].type == 0 and
                              p[IP].src == SERVER and p[ICMP].id == 9, 0.7)
    assert replied is None, f"answered a bad or fragmented datagram: {replied!r}"
    closed = 1 if PORT != 1 else 2
    sport = random.randint(20000, 60000)
    link.send(IP(src=ME, dst=SERVER) / TCP(sport=sport, dport=closed, flags="S", seq=1000))
    rst = link.recv_until(lambda p: IP in p and TCP in p and p[IP].src == SERVER and
                          p[TCP].dport == sport and "R" in p[TCP].flags, 1.0)
    assert rst is not None, "no reset for a SYN to a closed port"
    link.send(echo)
    p = link.recv_until(lambda p: ICMP in p and p[ICMP].type == 0 and p[IP].src == SERVER and
                        p[ICMP].id == 9, 2)
    assert p is not None and p[ICMP].seq == 1, "no echo reply"
    return {"ip_bad_csum": 1, "ip_fragments": 1, "tcp_no_listener": 1, "icmp_echo": 1}


def sums_ok(p):
    """The IPv4 and TCP/ICMP checksums of a received packet, recomputed."""
    ip = IP(bytes(p[IP]))
    again = ip.copy()
    del again.chksum
    layer = TCP if TCP in ip else ICMP
    del again[layer].chksum
    again = IP(bytes(again))
    return ip.chksum == again.chksum and ip[layer].chksum == again[layer].chksum


def check_wire_checksums(link):
    """What the server sends carries right checksums, whoever computed
    them (the port's offload or the stack): an echo reply, a SYN-ACK, the
    ACK of data."""
    link.send(IP(src=ME, dst=SERVER) / ICMP(id=11, seq=1) / Raw(b"sums" * 50))
    p = link.recv_until(lambda p: ICMP in p and p[ICMP].type == 0 and p[IP].src == SERVER and
                        p[ICMP].id == 11, 2)
    assert p is not None, "no echo reply"
    assert sums_ok(p), f"echo reply: {p!r}"
    c = Conn(link, ts=5)
    sa = c.open()
    assert sums_ok(sa), f"SYN-ACK: {sa!r}"
    c.send_data(b"\x16\x03\x01")
    a = ack_for(c, c.seq, 1.0)
    assert a is not None and sums_ok(a), f"ACK: {a!r}"
    link.send(c.seg("R"))
    return {"echo": True, "syn_ack": True, "ack": True}


def relay(tap_name, loss, duplicate, reorder, delay_ms):
    """A wire with impairments (the kernel here has no netem): frames from
    tap `tap_name` (the client side, owned by this process) go out on IFACE
    (the DPDK tap's kernel side) and back, each direction losing `loss`%,
    duplicating `duplicate`%, and delaying by `delay_ms` all but `reorder`%
    (which go at once, overtaking the delayed ones), as netem would.
    BCN_RELAY_PCAP=FILE records what it lets through (for debugging)."""
    tun = os.open("/dev/net/tun", os.O_RDWR)
    ifr = struct.pack("16sH", tap_name.encode(), 0x0002 | 0x1000)  # IFF_TAP | IFF_NO_PI
    fcntl.ioctl(tun, 0x400454CA, ifr)  # TUNSETIFF
    os.set_blocking(tun, False)
    pkt = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    pkt.bind((IFACE, 0))
    pkt.setblocking(False)
    print("ready", flush=True)
    dump = None
    if os.environ.get("BCN_RELAY_PCAP"):
        from scapy.utils import PcapWriter
        dump = PcapWriter(os.environ["BCN_RELAY_PCAP"], sync=True)
    queue = []  # (due, order, fd or socket, frame)
    order = 0

    def push(out, frame):
        nonlocal order
        for _ in range(2 if random.random() * 100 < duplicate else 1):
            if random.random() * 100 < loss:
                continue
            wait = 0 if random.random() * 100 < reorder else delay_ms / 1000
            order += 1
            heapq.heappush(queue, (time.monotonic() + wait, order, out, frame))

    while True:
        timeout = max(0.0, queue[0][0] - time.monotonic()) if queue else 1.0
        r, _, _ = select.select([tun, pkt], [], [], timeout)
        if tun in r:
            try:
                push(pkt, os.read(tun, 65536))
            except BlockingIOError:
                pass
        if pkt in r:
            try:
                frame, addr = pkt.recvfrom(65536)
                if addr[2] != socket.PACKET_OUTGOING:
                    push(tun, frame)
            except BlockingIOError:
                pass
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, out, frame = heapq.heappop(queue)
            if dump:
                dump.write(Ether(frame))
            try:
                if out is tun:
                    os.write(tun, frame)
                else:
                    pkt.send(frame)
            except OSError:
                pass  # a full queue drops, as a wire would


CHECKS = {"ping": check_ping, "bad_checksum": check_bad_checksum,
          "rst_window": check_rst_window, "syn_flood": check_syn_flood,
          "timestamps": check_timestamps, "rto_from_timestamps": check_rto_from_timestamps,
          "keepalive": check_keepalive, "counted": check_counted,
          "wire_checksums": check_wire_checksums}

if __name__ == "__main__":
    if CHECK == "relay":
        relay(sys.argv[5], *(float(a) for a in sys.argv[6:10]))
    else:
        print(json.dumps(CHECKS[CHECK](Link())))
