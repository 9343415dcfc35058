#!/usr/bin/env python3
"""PNG plots for perf/RESULTS.md from bench.sh's JSON lines, drawn by gnuplot:

  plot-handshakes.png   handshakes per server CPU second by mode and server
  plot-latency.png      p99 latency of full handshakes against offered rate
  plot-idle-memory.png  server memory per idle mutual-TLS connection

usage: plot.py RESULTS.jsonl OUTDIR"""
import json
import os
import subprocess
import sys
import tempfile

from report import SERVERS, figure, rise_rows

MODES = [
    ("full13", "full TLS 1.3"),
    ("full12", "full TLS 1.2"),
    ("resume13", "resumed TLS 1.3"),
    ("crl0", "full 1.3\\n+ empty CRL"),
    ("crl1m", "full 1.3\\n+ 1M-serial CRL"),
    ("burst", "full 1.3 burst\\n(open loop)"),
]
COLOURS = {"beacond": "#1f77b4", "nginx": "#2ca02c", "haproxy": "#d62728"}


def pick(results, scenario, server):
    return next((r for r in results if r.get("scenario") == scenario
                 and r.get("server") == server), None)


def main():
    results = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    outdir = sys.argv[2]
    servers = [s for s in SERVERS if any(r.get("server") == s for r in results)]
    tmp = tempfile.mkdtemp(prefix="beacon-plot.")
    script = []
    common = ('set terminal pngcairo size 1000,600 font "sans,11"\n'
              'set grid ytics\nset key top right\n')

    # 1. handshakes per server CPU second, clustered by mode
    modes = [(k, t) for k, t in MODES if any(r.get("scenario") == k for r in results)]
    if modes and servers:
        with open(os.path.join(tmp, "hs.dat"), "w") as f:
            f.write("# mode " + " ".join(servers) + "\n")
            for k, t in modes:
                vals = []
                for s in servers:
                    r = pick(results, k, s)
                    v = figure(r, "handshakes") if r else None
                    vals.append(f"{v:.1f}" if v is not None else "NaN")
                f.write(f'"{t}" ' + " ".join(vals) + "\n")
        n = len(servers)
        width = 0.8 / n
        plots = []
        for i, s in enumerate(servers):
            plots.append(f'"{tmp}/hs.dat" using {i + 2}:xtic(1) title "{s}" lc rgb "{COLOURS[s]}"')
        labels = []
        for i, s in enumerate(servers):
            off = (i - (n - 1) / 2) * width
            labels.append(f'"{tmp}/hs.dat" using ($0+({off:.3f})):{i + 2}:(sprintf("%.0f", ${i + 2})) '
                          f'with labels offset 0,0.7 font ",9" notitle')
        script.append(common + f'''set output "{outdir}/plot-handshakes.png"
set title "Mutual-TLS handshakes per second of server CPU (one core, 1 KiB PUT each)"
set ylabel "handshakes / server CPU second"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set yrange [0:*]
set xrange [-0.6:{len(modes) - 0.4}]
set offsets 0,0,graph 0.08,0
set xtics nomirror
set bmargin 4.5
plot {", ".join(plots)}, {", ".join(labels)}
reset
''')

    # 2. p99 against offered rate
    rows = rise_rows(results)
    if rows:
        plots = []
        for s in servers:
            pts = [(o, r) for o, r in rows if r["server"] == s]
            if not pts:
                continue
            with open(os.path.join(tmp, f"rise-{s}.dat"), "w") as f:
                f.write("# offered p99 p50 done\n")
                for o, r in pts:
                    lat = r.get("latency_ms", {})
                    f.write(f"{o} {max(lat.get('p99', 0), 0.01):.3f} {max(lat.get('p50', 0), 0.01):.3f} "
                            f"{r.get('handshakes_per_s', 0):.1f}\n")
            plots.append(f'"{tmp}/rise-{s}.dat" using 1:2 with linespoints lw 2 pt 7 lc rgb "{COLOURS[s]}" title "{s} p99"')
            plots.append(f'"{tmp}/rise-{s}.dat" using 1:3 with linespoints lw 1 dt 2 pt 6 lc rgb "{COLOURS[s]}" title "{s} p50"')
        script.append(common + f'''set output "{outdir}/plot-latency.png"
set title "Full TLS 1.3 mutual handshakes + 1 KiB PUT, open loop: latency against offered rate"
set xlabel "offered rate (new agents per second, Poisson arrivals)"
set ylabel "latency from arrival, ms (log scale)"
set logscale y
set key top left
set grid xtics ytics
plot {", ".join(plots)}
reset
''')

    # 3. memory per idle connection
    idle = [(s, pick(results, "idle", s)) for s in servers]
    idle = [(s, figure(r, "idle")) for s, r in idle if r]
    idle = [(s, v) for s, v in idle if v is not None]
    if idle:
        conns = max((r.get("connections_open", 0) for r in results if r.get("scenario") == "idle"), default=0)
        with open(os.path.join(tmp, "idle.dat"), "w") as f:
            for i, (s, v) in enumerate(idle):
                f.write(f'{i} "{s}" {v:.1f} 0x{COLOURS[s][1:]}\n')
        script.append(common + f'''set output "{outdir}/plot-idle-memory.png"
set title "Server memory per idle mutual-TLS connection (RSS delta at {conns:,} connections)"
set ylabel "KiB per connection"
set style fill solid 0.85 border -1
set boxwidth 0.6
set yrange [0:*]
set offsets 0.5,0.5,graph 0.1,0
set key off
plot "{tmp}/idle.dat" using 1:3:4:xtic(2) with boxes lc rgb variable, \\
     "{tmp}/idle.dat" using 1:3:(sprintf("%.1f KiB", $3)) with labels offset 0,0.8
reset
''')

    with open(os.path.join(tmp, "plots.gp"), "w") as f:
        f.write("\n".join(script))
    subprocess.run(["gnuplot", os.path.join(tmp, "plots.gp")], check=True)
    for name in ("plot-handshakes.png", "plot-latency.png", "plot-idle-memory.png"):
        if os.path.exists(os.path.join(outdir, name)):
            print(os.path.join(outdir, name))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
