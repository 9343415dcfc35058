"""The table of perf/burst.sh: median and range over the runs of one label.

    python3 perf/burst_report.py perf/out/burst.jsonl LABEL RUNS "COMMAND"
"""
import json, statistics, sys
path, label, runs, invocation = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = [json.loads(l) for l in open(path) if l.strip()]
rows = [r for r in rows if r["label"] == label][-runs * 5:]
steps = []
for r in rows:
    if r["step"] not in steps:
        steps.append(r["step"])
def fig(vals, fmt="{:,.0f}"):
    vals = sorted(vals)
    med = statistics.median(vals)
    if vals[0] == vals[-1]:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(vals[0])} - {fmt.format(vals[-1])})"
cols = [("offered /s", "offered_per_s"), ("agents", "agents"), ("201", "uploads_201"),
        ("503", "http_503"), ("closed unanswered", "closed_unanswered"),
        ("timeouts", "timeouts"), ("p50 ms", "p50_ms"), ("p99 ms", "p99_ms"),
        ("accept-and-close (refused_handshakes)", "refused_handshakes"),
        ("listen overflows", "listen_overflows"),
        ("uploads in flight, peak", "uploads_open_peak"),
        ("indexed >= 201", None), ("sample read back", None)]
print(f"beacond {label}, {len(rows) // max(len(steps), 1)} runs; median (min - max).\n")
print("| step | " + " | ".join(c for c, _ in cols) + " |")
print("| --- |" + " ---: |" * len(cols))
for s in steps:
    rs = [r for r in rows if r["step"] == s]
    cells = []
    for _, k in cols:
        if k:
            cells.append(fig([r[k] for r in rs]))
    cells.append("yes" if all(r["indexed"] >= r["uploads_201"] for r in rs) else
                 "NO: " + ", ".join(f'{r["indexed"]}/{r["uploads_201"]}' for r in rs))
    cells.append(f'{sum(r["sample_ok"] for r in rs)}/{sum(r["sample"] for r in rs)}')
    name = "handshake capacity (closed loop, 32 conns)" if s == "capacity" else s
    if s == "capacity":
        cells[0] = "-"
        cells[1] = fig([r["handshakes_per_s"] for r in rs]) + " /s"
    print(f"| {name} | " + " | ".join(cells) + " |")
print(f"\nCommand: `{invocation}`")
