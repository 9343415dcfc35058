"""The table of perf/burst.sh: median and range over the runs of one
invocation (its session, in every row it wrote).

    python3 perf/burst_report.py perf/out/burst.jsonl SESSION "COMMAND"
"""
import json, statistics, sys
path, session, invocation = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [json.loads(l) for l in open(path) if l.strip()]
rows = [r for r in rows if r.get("session") == session]
if not rows:
    raise SystemExit(f"{path}: no row of session {session}")
label = rows[0]["label"]
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

# Where the open-loop steps' time went (agentsim --stages): each stage's p99
# and its mean over the slowest 1% of uploads, beside how busy each side's
# CPU was; a tail that sits in client_wait is the load generator's own.
STAGES = ["client_wait", "tcp_connect", "server_first", "client_hs", "response"]


def stage_table(stages, splits):
    """One row per stage: its p50, p99 and slowest-1% mean, each the median
    (and range) over the runs' splits."""
    print("| stage | p50 | p99 | mean over the slowest 1% |")
    print("| --- | ---: | ---: | ---: |")
    for st in stages:
        cells = [fig([split[st][k] for split in splits], "{:,.1f}")
                 for k in ("p50", "p99", "tail_mean")]
        print(f"| {st} | " + " | ".join(cells) + " |")


staged = [s for s in steps if any(r.get("stages_ms") for r in rows if r["step"] == s)]
for s in staged:
    rs = [r for r in rows if r["step"] == s and r.get("stages_ms")]
    busy = lambda k: fig([100 * r[k] for r in rs if r.get(k) is not None])
    print(f"\n{s}: where each upload's time went (ms; median (min - max) over "
          f"{len(rs)} runs). beacond's CPU {busy('server_cpu_busy')}% busy, "
          f"the load generator's {busy('client_cpu_busy')}%.\n")
    stage_table(["total"] + STAGES, [r["stages_ms"] for r in rs])
    commits = [r["commit_ms"] for r in rs if r.get("commit_ms", {}).get("mean") is not None]
    if commits:
        print(f"\nbeacond's durable commits over the step: mean "
              f"{fig([c['mean'] for c in commits], '{:,.1f}')} ms, 99% within "
              f"{', '.join(str(c['p99_le']) for c in commits)} ms (histogram bounds).")
    wired = [r for r in rs if r.get("wire_ms")]
    if wired:
        print(f"\n{s}, from the packet capture (perf/wire_stages.py): the server's share "
              f"and the client's, SYN to the server's last bytes (ms; "
              f"{', '.join(str(r['wire_ms']['connections']) for r in wired)} connections "
              f"whole of {', '.join(str(r['uploads_201']) for r in wired)} uploads, "
              f"capture drops {', '.join(str(r['wire_ms'].get('capture_drops')) for r in wired)}).\n")
        stage_table(["total", "connect", "client_first", "server_first", "client_second",
                     "server_second", "server", "client"], [r["wire_ms"] for r in wired])
print(f"\nCommand: `{invocation}`")
