#!/usr/bin/env python3
"""Markdown tables for perf/RESULTS.md from bench.sh's JSON lines: one table
per scenario, each server's figure per second of server CPU and its ratio to
nginx's."""
import json
import sys

SCENARIOS = [
    ("full13", "Full mutual-TLS handshakes, TLS 1.3, 1 KiB PUT per connection", "handshakes"),
    ("full12", "Full mutual-TLS handshakes, TLS 1.2, 1 KiB PUT per connection", "handshakes"),
    ("resume13", "Resumed handshakes (session tickets), TLS 1.3, 1 KiB PUT per connection", "handshakes"),
    ("ka16k", "Keep-alive uploads, 16 KiB bodies", "mb"),
    ("ka1m", "Keep-alive uploads, 1 MiB bodies", "mb"),
    ("idle", "Idle mutual-TLS connections: server memory per connection", "idle"),
]
# about 90 us of server crypto per full TLS 1.3 mutual-auth handshake
CRYPTO_CEILING_US = 90.0


def figure(r, kind):
    cpu = r.get("server_cpu_s") or 0
    if kind == "idle":
        n = r.get("connections_open") or 0
        delta = (r.get("server_rss1_kib") or 0) - (r.get("server_rss0_kib") or 0)
        return delta / n if n and r.get("server_rss1_kib") else None
    if cpu <= 0:
        return None
    if kind == "handshakes":
        return r.get("handshakes", 0) / cpu
    return r.get("body_bytes", 0) / 1e6 / cpu


def other_load(r):
    """Busy time of the two cores not spent by the server (CPU 0) or by
    agentsim (CPU 1), as a share of the run: other work on the machine."""
    d = r.get("duration_s") or 0
    if not d or "cpu0_busy_s" not in r:
        return "n/a"
    o0 = max(0.0, r["cpu0_busy_s"] - r.get("server_cpu_s", 0)) / d
    o1 = max(0.0, r["cpu1_busy_s"] - r.get("client_cpu_s", 0)) / d
    return f"{o0 * 100:.0f}% / {o1 * 100:.0f}%"


def errors(r):
    e = {k: v for k, v in r.get("errors", {}).items() if v}
    text = ", ".join(f"{k} {v}" for k, v in e.items()) or "0"
    return text + (" (server stopped during the run)" if r.get("server_died") else "")


def fmt(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def table(rows, kind):
    base = next((figure(r, kind) for r in rows if r["server"] == "nginx"), None)
    if kind == "idle":
        print("| server | KiB per connection (RSS delta) | connections | ratio to nginx | errors |")
        print("| --- | ---: | ---: | ---: | --- |")
    elif kind == "handshakes":
        print("| server | handshakes / server CPU s | ratio to nginx | server CPU us / handshake | "
              "handshakes/s (wall) | server CPU busy | other load CPU0 / CPU1 | resumed | p50 ms | p99 ms | errors |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    else:
        print("| server | MB / server CPU s | ratio to nginx | uploads / server CPU s | MB/s (wall) | "
              "server CPU busy | other load CPU0 / CPU1 | p50 ms | p99 ms | errors |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        f = figure(r, kind)
        ratio = f"{f / base:.2f}x" if f is not None and base else "n/a"
        busy = (r.get("server_cpu_s", 0) / r["duration_s"]) if r.get("duration_s") else None
        busy_s = "n/a" if busy is None else f"{busy * 100:.0f}%"
        lat = r.get("latency_ms", {})
        if kind == "idle":
            print(f"| {r['server']} | {fmt(f, 1)} | {r.get('connections_open', 0):,} | {ratio} | {errors(r)} |")
        elif kind == "handshakes":
            us = 1e6 / f if f else None
            print(f"| {r['server']} | {fmt(f)} | {ratio} | {fmt(us)} | {fmt(r.get('handshakes_per_s'))} | "
                  f"{busy_s} | {other_load(r)} | {r.get('resumed_fraction', 0):.2f} | {lat.get('p50', 0):.2f} | "
                  f"{lat.get('p99', 0):.2f} | {errors(r)} |")
        else:
            cpu = r.get("server_cpu_s") or 0
            ups = r.get("uploads", 0) / cpu if cpu else None
            print(f"| {r['server']} | {fmt(f, 1)} | {ratio} | {fmt(ups)} | {fmt(r.get('mb_per_s'), 1)} | "
                  f"{busy_s} | {other_load(r)} | {lat.get('p50', 0):.2f} | {lat.get('p99', 0):.2f} | {errors(r)} |")


def main():
    results = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    for key, title, kind in SCENARIOS:
        rows = [r for r in results if r.get("scenario") == key]
        if not rows:
            continue
        print(f"## {title}")
        print()
        table(rows, kind)
        if key == "full13":
            for r in rows:
                f = figure(r, kind)
                if r["server"] == "beacond" and f:
                    print()
                    print(f"beacond spends {1e6 / f:.0f} us of server CPU per full TLS 1.3 "
                          f"mutual-auth handshake; the crypto alone is about "
                          f"{CRYPTO_CEILING_US:.0f} us ({CRYPTO_CEILING_US * f / 1e6 * 100:.0f}% of its time).")
        print()


if __name__ == "__main__":
    main()
