"""Where each connection's time went, from a packet capture of the loopback:
the server's share and the client's, told apart by who sent the packet that
ends each stage (perf/burst.sh --capture).

    python3 perf/wire_stages.py CAPTURE.pcap SERVER_PORT [--json]

On the loopback a packet is captured as its sender sends it, so the gap
between two packets is the time the side that sent the second one spent:

    connect        client SYN -> server SYN-ACK       the kernel; a dropped SYN
                                                      shows as its 1 s retry
    client_first   SYN-ACK -> ClientHello             the client noticing the
                                                      connect, its key share
    server_first   ClientHello -> server's first      the server: its accept
                   flight                             queue, its worker's queue,
                                                      its ServerHello flight
    client_second  server's first flight -> the       the client verifying the
                   client's last bytes before the     server and sending its
                   answer                             flight and the upload
    server_second  -> the server's last bytes         the server: the client's
                                                      certificate, the upload,
                                                      the durable commit, the 201

Each stage's p50 and p99, and its mean over the slowest 1% of connections
(by the whole: SYN to the server's last bytes). Only connections seen from
SYN to answer are counted; the capture's own drops are the caller's to
report (tcpdump prints them).
"""
import json
import struct
import sys

STAGES = ["connect", "client_first", "server_first", "client_second", "server_second"]
SERVER = ["server_first", "server_second"]
CLIENT = ["client_first", "client_second"]


def packets(path):
    """(time in s, src port, dst port, tcp flags, payload bytes) per packet."""
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        if magic == 0xA1B2C3D4:
            scale, endian = 1e-6, "<"
        elif magic == 0xA1B23C4D:
            scale, endian = 1e-9, "<"
        else:
            raise SystemExit(f"{path}: not a little-endian pcap file")
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        link_len = {1: 14, 113: 16, 276: 20, 0: 4}.get(linktype)
        if link_len is None:
            raise SystemExit(f"{path}: link type {linktype} not handled")
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            sec, frac, caplen, wirelen = struct.unpack(endian + "IIII", rec)
            data = f.read(caplen)
            ip = data[link_len:]
            if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
                continue
            ihl = (ip[0] & 15) * 4
            total = struct.unpack(">H", ip[2:4])[0]
            tcp = ip[ihl:]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack(">HH", tcp[:4])
            off = (tcp[12] >> 4) * 4
            yield sec + frac * scale, sport, dport, tcp[13], total - ihl - off


SYN, ACK, FIN, RST = 0x02, 0x10, 0x01, 0x04


def connections(path, server_port):
    """Per connection (a client SYN starts one), its packets' instants."""
    open_by_port, done = {}, []
    for t, sport, dport, flags, length in packets(path):
        if dport == server_port:
            if flags & SYN and not flags & ACK:
                old = open_by_port.pop(sport, None)
                if old:
                    done.append(old)
                open_by_port[sport] = {"syn": t, "synack": None, "client": [], "server": []}
            elif sport in open_by_port and length > 0:
                open_by_port[sport]["client"].append(t)
        elif sport == server_port and dport in open_by_port:
            c = open_by_port[dport]
            if flags & SYN and flags & ACK and c["synack"] is None:
                c["synack"] = t
            elif length > 0:
                c["server"].append(t)
    return done + list(open_by_port.values())


def stages_of(c):
    """The five stages of one connection in ms, or None if it is not whole."""
    if c["synack"] is None or not c["client"] or len(c["server"]) < 2:
        return None
    hello, first, answer = c["client"][0], c["server"][0], c["server"][-1]
    second = [t for t in c["client"] if first < t < answer]
    if not second or hello > first:
        return None
    at = [c["syn"], c["synack"], hello, first, second[-1], answer]
    return {s: (at[i + 1] - at[i]) * 1e3 for i, s in enumerate(STAGES)}


def quantile(sorted_vals, q):
    return sorted_vals[min(int(q * len(sorted_vals)), len(sorted_vals) - 1)]


def report(rows):
    for r in rows:
        r["total"] = sum(r[s] for s in STAGES)
        r["server"] = sum(r[s] for s in SERVER)
        r["client"] = sum(r[s] for s in CLIENT)
    totals = sorted(r["total"] for r in rows)
    tail_from = quantile(totals, 0.99)
    tail = [r for r in rows if r["total"] >= tail_from]
    out = {"connections": len(rows)}
    for s in ["total"] + STAGES + ["server", "client"]:
        vals = sorted(r[s] for r in rows)
        out[s] = {"p50": quantile(vals, 0.5), "p99": quantile(vals, 0.99),
                  "tail_mean": sum(r[s] for r in tail) / len(tail)}
    return out


def main():
    path, port = sys.argv[1], int(sys.argv[2])
    rows = [s for s in map(stages_of, connections(path, port)) if s]
    if not rows:
        raise SystemExit(f"{path}: no whole connection to port {port}")
    out = report(rows)
    if "--json" in sys.argv:
        print(json.dumps(out))
        return
    print(f"{out['connections']} connections, SYN to the server's last bytes (ms):\n")
    print("| stage | p50 | p99 | mean over the slowest 1% |")
    print("| --- | ---: | ---: | ---: |")
    for s in ["total"] + STAGES + ["server", "client"]:
        v = out[s]
        print(f"| {s} | {v['p50']:.1f} | {v['p99']:.1f} | {v['tail_mean']:.1f} |")


if __name__ == "__main__":
    main()
