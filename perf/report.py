#!/usr/bin/env python3
"""Markdown tables for perf/RESULTS.md from bench.sh's JSON lines: one table
per scenario, each server's figure per second of server CPU and its ratio to
nginx's.

bench.sh runs every scenario several times with the servers interleaved
(run 1: beacond, nginx, HAProxy; run 2: the same ...), and tlsceiling (the
TLS ceiling, server "ceiling") once per run; each line carries its run
number in "rep". The summary gives each figure's median over the runs with
its range, and each ratio as the median and range of the per-run ratios
(both servers of a ratio measured in the same run). `--summary` prints only
that summary (bench.sh shows it on the terminal)."""
import json
import statistics
import sys

SCENARIOS = [
    ("full13", "Full mutual-TLS handshakes, TLS 1.3, 1 KiB PUT per connection", "handshakes"),
    ("full12", "Full mutual-TLS handshakes, TLS 1.2, 1 KiB PUT per connection", "handshakes"),
    ("resume13", "Resumed handshakes (session tickets), TLS 1.3, 1 KiB PUT per connection", "handshakes"),
    ("ka16k", "Keep-alive uploads, 16 KiB bodies", "mb"),
    ("ka1m", "Keep-alive uploads, 1 MiB bodies", "mb"),
    ("idle", "Idle mutual-TLS connections: server memory per connection", "idle"),
]


def label(r):
    """The server, and the run where bench.sh ran several."""
    return f"{r['server']} (run {r['rep']})" if "rep" in r else r["server"]


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
    o = other_shares(r)
    if o is None:
        return "n/a"
    return f"{o[0] * 100:.0f}% / {o[1] * 100:.0f}%"


def other_shares(r):
    """(CPU 0, CPU 1) shares of the measurement window (agentsim's whole
    life, start-up included, where recorded) spent on other work."""
    d = r.get("window_s") or r.get("duration_s") or 0
    if not d or "cpu0_busy_s" not in r:
        return None
    o0 = max(0.0, r["cpu0_busy_s"] - r.get("server_cpu_s", 0)) / d
    o1 = max(0.0, r["cpu1_busy_s"] - r.get("client_cpu_s", 0)) / d
    return min(o0, 1.0), min(o1, 1.0)


def errors(r):
    e = {k: v for k, v in r.get("errors", {}).items() if v}
    text = ", ".join(f"{k} {v}" for k, v in e.items()) or "0"
    return text + (" (server stopped during the run)" if r.get("server_died") else "")


def fmt(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def table(rows, kind):
    # each row's ratio is to nginx in the same run
    bases = {r.get("rep", 1): figure(r, kind) for r in rows if r["server"] == "nginx"}
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
        base = bases.get(r.get("rep", 1))
        ratio = f"{f / base:.2f}x" if f is not None and base else "n/a"
        busy = (r.get("server_cpu_s", 0) / r["duration_s"]) if r.get("duration_s") else None
        busy_s = "n/a" if busy is None else f"{busy * 100:.0f}%"
        lat = r.get("latency_ms", {})
        if kind == "idle":
            print(f"| {label(r)} | {fmt(f, 1)} | {r.get('connections_open', 0):,} | {ratio} | {errors(r)} |")
        elif kind == "handshakes":
            us = 1e6 / f if f else None
            print(f"| {label(r)} | {fmt(f)} | {ratio} | {fmt(us)} | {fmt(r.get('handshakes_per_s'))} | "
                  f"{busy_s} | {other_load(r)} | {r.get('resumed_fraction', 0):.2f} | {lat.get('p50', 0):.2f} | "
                  f"{lat.get('p99', 0):.2f} | {errors(r)} |")
        else:
            cpu = r.get("server_cpu_s") or 0
            ups = r.get("uploads", 0) / cpu if cpu else None
            print(f"| {label(r)} | {fmt(f, 1)} | {ratio} | {fmt(ups)} | {fmt(r.get('mb_per_s'), 1)} | "
                  f"{busy_s} | {other_load(r)} | {lat.get('p50', 0):.2f} | {lat.get('p99', 0):.2f} | {errors(r)} |")


SERVERS = ["beacond", "nginx", "haproxy"]
STORE = [("ka4k", "4 KiB"), ("ka64k", "64 KiB"), ("ka1m", "1 MiB")]


def scenario_kind(scenario):
    if scenario.startswith("ka"):
        return "mb"
    if scenario == "idle":
        return "idle"
    return "handshakes"


def pick(results, scenario, server):
    """The run whose figure is the median of that server's runs (the lower
    of the middle two), so detailed tables show a typical run."""
    rows = [r for r in results if r.get("scenario") == scenario and r.get("server") == server]
    if len(rows) <= 1:
        return rows[0] if rows else None
    kind = scenario_kind(scenario)
    rows.sort(key=lambda r: figure(r, kind) or 0)
    return rows[(len(rows) - 1) // 2]


def busy_pct(r):
    d = r.get("duration_s") or 0
    return f"{r.get('server_cpu_s', 0) / d * 100:.0f}%" if d else "n/a"


def rate(r, key):
    d = r.get("duration_s") or 0
    return r.get(key, 0) / d if d else None


# the ceiling's kind for each handshake scenario (crl*: full TLS 1.3)
CEILING_OF = {"full13": "full13", "full12": "full12", "resume13": "resume13",
              "crl0": "full13", "crl1m": "full13"}
MIN_RESUMED = 0.8


def runs_of(results):
    return sorted({r.get("rep", 1) for r in results})


def per_run(results, scenario, server, value):
    """{run: value(row)} for one server's rows of one scenario."""
    out = {}
    for r in results:
        if r.get("scenario") == scenario and r.get("server") == server:
            v = value(r)
            if v is not None:
                out[r.get("rep", 1)] = v
    return out


def ceiling_per_run(results, scenario):
    kind = CEILING_OF.get(scenario)
    return per_run(results, kind, "ceiling", lambda r: r.get("handshakes_per_server_cpu_s"))


def spread(vals, digits=0, suffix=""):
    """median [min-max] of a list of numbers, or n/a."""
    if not vals:
        return "n/a"
    med = statistics.median(vals)
    if len(vals) == 1:
        return f"{med:,.{digits}f}{suffix}"
    return f"{med:,.{digits}f}{suffix} [{min(vals):,.{digits}f}-{max(vals):,.{digits}f}]"


def ratios(a, b):
    """Per-run a/b where both were measured in that run."""
    return [a[k] / b[k] for k in a if k in b and b[k]]


def resumed_problem(results, scenario, server):
    """The runs in which a server resumed less than MIN_RESUMED of its
    handshakes: its figure then measures full handshakes, not resumption."""
    if scenario != "resume13":
        return {}
    fr = per_run(results, scenario, server, lambda r: r.get("resumed_fraction"))
    return {k: v for k, v in fr.items() if v < MIN_RESUMED}


def summary_values(results, key, kind):
    vals = {}
    for srv in SERVERS:
        if kind == "burst":
            v = per_run(results, key, srv, lambda r: r.get("latency_ms", {}).get("p99"))
        else:
            v = per_run(results, key, srv, lambda r, k=kind: figure(r, k))
        bad = resumed_problem(results, key, srv)
        vals[srv] = {k: x for k, x in v.items() if k not in bad}
    return vals


def ceiling_table(results):
    rows = [r for r in results if r.get("server") == "ceiling"]
    if not rows:
        return
    print("## The TLS ceiling (perf/tlsceiling)")
    print()
    print("A wolfSSL server and client in one process over memory, the server set up as "
          "beacond's (same build, certificates, groups, suites, mutual authentication, "
          "tickets), pinned to CPU 0 like the servers, once per run; only the server's "
          "calls are timed (thread CPU time), each with a 1 KiB request and a short "
          "response. Median [range] over the runs.")
    print()
    print("| kind | handshakes / server CPU s | server CPU us / handshake | resumed |")
    print("| --- | ---: | ---: | ---: |")
    for kind in ("full13", "resume13", "full12"):
        v = per_run(results, kind, "ceiling", lambda r: r.get("handshakes_per_server_cpu_s"))
        if not v:
            continue
        us = [1e6 / x for x in v.values() if x]
        fr = per_run(results, kind, "ceiling", lambda r: r.get("resumed_fraction"))
        print(f"| {kind} | {spread(list(v.values()))} | {spread(us)} | {spread(list(fr.values()), 2)} |")
    print()


def resumed_lines(results):
    """The resumed fraction of every server in every run of every resumed
    scenario, and the measurement problems."""
    lines = []
    for sc in ("resume13",):
        for srv in SERVERS:
            fr = per_run(results, sc, srv, lambda r: r.get("resumed_fraction"))
            if not fr:
                continue
            text = ", ".join(f"run {k}: {v * 100:.0f}%" for k, v in sorted(fr.items()))
            bad = resumed_problem(results, sc, srv)
            note = ""
            if bad:
                note = (f" — **measurement problem**: below {MIN_RESUMED * 100:.0f}% in "
                        f"{len(bad)} of {len(fr)} runs; those runs measure full handshakes "
                        f"and are left out of the summary")
            lines.append(f"- {sc}, {srv}: resumed {text}{note}")
    return lines


def summary(results):
    """One line per scenario: the median figure per server CPU second over
    the runs, with its range, and the per-run ratios' median and range, to
    nginx, beacond to HAProxy, and each handshake row to the TLS ceiling."""
    lines = [
        ("full13", "full TLS 1.3 mutual handshakes / server CPU s", "handshakes", 0),
        ("full12", "full TLS 1.2 mutual handshakes / server CPU s", "handshakes", 0),
        ("resume13", "resumed TLS 1.3 handshakes / server CPU s", "handshakes", 0),
        ("crl0", "full TLS 1.3 handshakes / server CPU s, empty CRL", "handshakes", 0),
        ("crl1m", "full TLS 1.3 handshakes / server CPU s, 1,000,000-serial CRL", "handshakes", 1),
        ("ka4k", "keep-alive 4 KiB uploads, MB / server CPU s", "mb", 1),
        ("ka16k", "keep-alive 16 KiB uploads, MB / server CPU s", "mb", 1),
        ("ka64k", "keep-alive 64 KiB uploads, MB / server CPU s", "mb", 1),
        ("ka1m", "keep-alive 1 MiB uploads, MB / server CPU s", "mb", 1),
        ("idle", "KiB per idle mTLS connection (lower is better)", "idle", 1),
        ("burst", "burst p99 latency, ms (lower is better)", "burst", 0),
    ]
    present = [ln for ln in lines if any(r.get("scenario") == ln[0] and r.get("server") in SERVERS
                                         for r in results)]
    if not present:
        return
    n = len(runs_of([r for r in results if r.get("server") in SERVERS]))
    print(f"## Summary: median [min-max] over {n} run{'s' if n != 1 else ''}, servers interleaved")
    print()
    print("Figures per second of server CPU. A ratio is taken within each run (both "
          "servers measured minutes apart, not hours) and its median and range over the "
          "runs are shown. \"/ ceiling\": the handshake rate as a share of perf/tlsceiling's "
          "rate for the same kind in the same run (crl rows: full TLS 1.3).")
    print()
    print("| scenario | beacond | nginx | HAProxy | beacond / nginx | HAProxy / nginx | "
          "beacond / HAProxy | beacond / ceiling | nginx / ceiling | HAProxy / ceiling |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, title, kind, digits in present:
        vals = summary_values(results, key, kind)
        ceil = ceiling_per_run(results, key) if kind == "handshakes" else {}

        def cell(srv):
            if not vals[srv] and resumed_problem(results, key, srv):
                return "measurement problem (see below)"
            return spread(list(vals[srv].values()), digits)

        def ratio(a, b):
            return spread(ratios(a, b), 2, "x") if a and b else "n/a"

        print(f"| {title} | {cell('beacond')} | {cell('nginx')} | {cell('haproxy')} | "
              f"{ratio(vals['beacond'], vals['nginx'])} | {ratio(vals['haproxy'], vals['nginx'])} | "
              f"{ratio(vals['beacond'], vals['haproxy'])} | "
              f"{ratio(vals['beacond'], ceil)} | {ratio(vals['nginx'], ceil)} | "
              f"{ratio(vals['haproxy'], ceil)} |")
    print()
    rl = resumed_lines(results)
    if rl:
        print(f"Resumed fraction per run (a server that resumes less than "
              f"{MIN_RESUMED * 100:.0f}% of the time is a measurement problem, not a result):")
        print()
        print("\n".join(rl))
        print()
    print("beacond fdatasyncs every upload before its 201; nginx writes PUTs to disk "
          "without fsync; HAProxy answers 201 and stores nothing.")
    print()


def store_table(results):
    if not any(r.get("scenario") in dict(STORE) for r in results):
        return
    print("## Durable uploads (issue 3): keep-alive PUTs, 32 connections")
    print()
    print("| body | server | uploads/s | MB/s | uploads / server CPU s | MB / server CPU s | "
          "fdatasyncs/s | mean group (uploads / commit) | server CPU busy | other load CPU0 / CPU1 | "
          "p50 ms | p99 ms | errors | note |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for key, size in STORE:
        for srv in SERVERS:
            r = pick(results, key, srv)
            if srv == "haproxy":
                print(f"| {size} | haproxy | — | — | — | — | — | — | — | — | — | — | — | does not store (answers 201, keeps nothing) |")
                continue
            if r is None:
                continue
            cpu = r.get("server_cpu_s") or 0
            lat = r.get("latency_ms", {})
            b = r.get("beacond") or {}
            d = r.get("duration_s") or 0
            if srv == "beacond" and b and d:
                commits = b.get("store_commits", 0)
                fs = f"{b.get('store_fdatasyncs', 0) / d:,.0f}"
                if commits:
                    fs += f" ({b.get('store_fdatasyncs', 0) / commits:.1f} per commit)"
                up = b.get("store_uploads_committed") or b.get("uploads", 0)
                grp = f"{up / commits:.1f}" if commits else "n/a"
                note = "fdatasync before every 201 (group commit)"
            else:
                fs, grp = "0", "—"
                note = "**does not fsync** (DAV PUT to disk, page cache only)"
            print(f"| {size} | {srv} | {fmt(r.get('uploads_per_s'))} | {fmt(r.get('mb_per_s'), 1)} | "
                  f"{fmt(r.get('uploads', 0) / cpu if cpu else None)} | "
                  f"{fmt(r.get('body_bytes', 0) / 1e6 / cpu if cpu else None, 1)} | {fs} | {grp} | "
                  f"{busy_pct(r)} | {other_load(r)} | {lat.get('p50', 0):.2f} | {lat.get('p99', 0):.2f} | "
                  f"{errors(r)} | {note} |")
    print()


SYSCALL_SCENARIOS = [("full13", "full TLS 1.3 handshake + 1 KiB PUT"),
                     ("full12", "full TLS 1.2 handshake + 1 KiB PUT"),
                     ("resume13", "resumed TLS 1.3 handshake + 1 KiB PUT"),
                     ("ka4k", "4 KiB keep-alive PUT"), ("ka16k", "16 KiB keep-alive PUT"),
                     ("ka64k", "64 KiB keep-alive PUT"), ("ka1m", "1 MiB keep-alive PUT")]


def syscalls_per_request(r):
    """The server's system calls (perf stat, bench.sh) per connection and
    upload in a handshake scenario, per upload in a keep-alive one."""
    calls = r.get("server_syscalls")
    n = r.get("uploads") or r.get("handshakes")
    return calls / n if calls is not None and n else None


def syscall_table(results):
    if not any(r.get("server_syscalls") is not None for r in results):
        return
    print("## System calls per request")
    print()
    print("Every system call of the server process while the scenario ran "
          "(perf's raw_syscalls tracepoint: a count, not a sample, so it does "
          "not move with the machine's load), per request: median [min-max] over the runs.")
    print()
    print("| request | " + " | ".join(SERVERS) + " |")
    print("| --- |" + " ---: |" * len(SERVERS))
    for key, title in SYSCALL_SCENARIOS:
        cells = [spread(list(per_run(results, key, srv, syscalls_per_request).values()), 1)
                 for srv in SERVERS]
        if all(c == "n/a" for c in cells):
            continue
        print(f"| {title} | " + " | ".join(cells) + " |")
    print()


def crl_table(results):
    if not any(r.get("scenario") in ("crl0", "crl1m") for r in results):
        return
    print("## 1,000,000-serial CRL (issue 4): full TLS 1.3 mutual handshakes, 1 KiB PUT, 32 connections")
    print()
    print("Each server started once with an empty CRL for the agents' CA and once with a "
          "CRL of 1,000,000 random serials (48 MB PEM, `perf/gen-crl.sh`): beacond "
          "`crl_dir`, nginx `ssl_crl`, HAProxy `crl-file`.")
    print()
    print("| server | handshakes / server CPU s, empty CRL | with 1,000,000-serial CRL | ratio with / without | "
          "handshakes/s (wall) empty / 1M | p99 ms empty / 1M | start-up to listening, empty / 1M | "
          "other load CPU0 / CPU1 (1M) | errors (1M) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for srv in SERVERS:
        a, b = pick(results, "crl0", srv), pick(results, "crl1m", srv)
        if a is None and b is None:
            continue
        fa = figure(a, "handshakes") if a else None
        fb = figure(b, "handshakes") if b else None
        ratio = f"{fb / fa:.3f}" if fa and fb is not None else "n/a"

        def g(r, f):
            return f(r) if r else "n/a"
        print(f"| {srv} | {fmt(fa)} | {fmt(fb)} | {ratio} | "
              f"{g(a, lambda r: fmt(r.get('handshakes_per_s')))} / {g(b, lambda r: fmt(r.get('handshakes_per_s')))} | "
              f"{g(a, lambda r: f'{r.get(chr(108)+chr(97)+chr(116)+chr(101)+chr(110)+chr(99)+chr(121)+chr(95)+chr(109)+chr(115), {}).get(chr(112)+chr(57)+chr(57), 0):.1f}')} / "
              f"{g(b, lambda r: f'{r.get(chr(108)+chr(97)+chr(116)+chr(101)+chr(110)+chr(99)+chr(121)+chr(95)+chr(109)+chr(115), {}).get(chr(112)+chr(57)+chr(57), 0):.1f}')} | "
              f"{g(a, lambda r: str(r.get('server_start_s')) + ' s')} / {g(b, lambda r: str(r.get('server_start_s')) + ' s')} | "
              f"{g(b, other_load)} | {g(b, errors)} |")
    b = pick(results, "crl1m", "beacond")
    if b and "crl_reload_wall_s" in b:
        print()
        print(f"beacond's CRL load (`beaconctl reload crl` with the 1,000,000-serial CRL in `crl_dir`, "
              f"signature check and its own hash index included): {b['crl_reload_wall_s']:.2f} s wall, "
              f"{b['crl_reload_cpu_s']:.2f} s of beacond CPU (\"{b.get('crl_reload_message', '')}\").")
    print()


def burst_table(results):
    rows = [r for r in results if r.get("scenario") == "burst"]
    if not rows:
        return
    print(f"## Burst: agents arriving within 10 s (open loop, full TLS 1.3 handshake + 1 KiB PUT each, "
          f"up to 1,000 connections at once)")
    print()
    print("Latency counts from each agent's arrival, so time queued for a connection is included.")
    print()
    print("| server | agents | uploads done | took s | handshakes / server CPU s | p50 ms | p99 ms | p99.9 ms | "
          "server CPU busy | other load CPU0 / CPU1 | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        lat = r.get("latency_ms", {})
        agents = r.get("uploads", 0) + sum(v for v in r.get("errors", {}).values())
        print(f"| {label(r)} | {agents:,} | {r.get('uploads', 0):,} | {r.get('duration_s', 0):.1f} | "
              f"{fmt(figure(r, 'handshakes'))} | {lat.get('p50', 0):.1f} | {lat.get('p99', 0):.1f} | "
              f"{lat.get('p999', 0):.1f} | {busy_pct(r)} | {other_load(r)} | {errors(r)} |")
    print()


def rise_rows(results):
    out = []
    for r in results:
        sc = r.get("scenario", "")
        if sc.startswith("rise") and sc[4:].isdigit():
            out.append((int(sc[4:]), r))
    return sorted(out, key=lambda x: (SERVERS.index(x[1]["server"]) if x[1]["server"] in SERVERS else 9,
                                      x[1].get("rep", 1), x[0]))


def rise_table(results):
    rows = rise_rows(results)
    if not rows:
        return
    print("## Latency under rising load: full TLS 1.3 handshakes open loop (Poisson arrivals, up to 256 connections)")
    print()
    print("| server | offered /s | done /s | p50 ms | p99 ms | server CPU busy | other load CPU0 / CPU1 | "
          "agentsim CPU busy | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for offered, r in rows:
        lat = r.get("latency_ms", {})
        d = r.get("duration_s") or 0
        cb = f"{r.get('client_cpu_s', 0) / d * 100:.0f}%" if d else "n/a"
        print(f"| {label(r)} | {offered:,} | {fmt(r.get('handshakes_per_s'))} | {lat.get('p50', 0):.1f} | "
              f"{lat.get('p99', 0):.1f} | {busy_pct(r)} | {other_load(r)} | {cb} | {errors(r)} |")
    print()


def machine_load(results):
    """Mean and worst share of each core spent on work other than the server
    (CPU 0) and agentsim (CPU 1), over every scenario of the run."""
    o0, o1 = [], []
    for r in results:
        o = other_shares(r)
        if o is None:
            continue
        o0.append(o[0])
        o1.append(o[1])
    if not o0:
        return
    print(f"Other work during the run (share of the core not spent by the server on CPU 0 "
          f"or by agentsim on CPU 1, loopback softirq included), mean over the {len(o0)} "
          f"measurements (worst): CPU 0 {sum(o0) / len(o0) * 100:.0f}% ({max(o0) * 100:.0f}%), "
          f"CPU 1 {sum(o1) / len(o1) * 100:.0f}% ({max(o1) * 100:.0f}%).")
    print()


def main():
    only_summary = sys.argv[1] == "--summary"
    path = sys.argv[2] if only_summary else sys.argv[1]
    results = [json.loads(line) for line in open(path) if line.strip()]
    if only_summary:
        ceiling_table(results)
        summary(results)
        return
    machine_load(results)
    ceiling_table(results)
    summary(results)
    store_table(results)
    syscall_table(results)
    crl_table(results)
    burst_table(results)
    rise_table(results)
    for key, title, kind in SCENARIOS:
        rows = [r for r in results if r.get("scenario") == key and r.get("server") in SERVERS]
        if not rows:
            continue
        print(f"## {title}")
        print()
        table(rows, kind)
        if key == "full13":
            ceil = ceiling_per_run(results, key)
            for r in rows:
                f = figure(r, kind)
                c = ceil.get(r.get("rep", 1))
                if r["server"] == "beacond" and f and c:
                    print()
                    print(f"beacond{' in run ' + str(r['rep']) if 'rep' in r else ''} spends "
                          f"{1e6 / f:.0f} us of server CPU per full TLS 1.3 mutual-auth handshake "
                          f"with its durable 1 KiB PUT; wolfSSL alone in memory (perf/tlsceiling) "
                          f"spends {1e6 / c:.0f} us ({c and f / c * 100:.0f}% of the ceiling).")
        print()


if __name__ == "__main__":
    main()
