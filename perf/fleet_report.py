#!/usr/bin/env python3
"""The table of perf/fleet.sh: medians and ranges over its repeats, from
perf/out/fleet.jsonl (one line per step: off, on, at80)."""

import argparse
import json
import statistics


def fmt(vals, digits=0, pct=False):
    if not vals:
        return "-"
    f = (lambda v: f"{v:.{digits}f}%") if pct else (lambda v: f"{v:,.{digits}f}")
    med = statistics.median(vals)
    if len(vals) == 1:
        return f(med)
    return f"{f(med)} ({f(min(vals))} - {f(max(vals))})"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("--command", default="perf/fleet.sh")
    ap.add_argument("--machine", default="")
    ap.add_argument("--commit", default="")
    a = ap.parse_args()
    recs = [json.loads(line) for line in open(a.jsonl) if line.strip()]
    sizes = sorted({r["beacons"] for r in recs})
    repeats = sorted({r["repeat"] for r in recs})

    def get(step, n):
        return {r["repeat"]: r for r in recs if r["step"] == step and r["beacons"] == n}

    load = [r["loadavg_1m"] for r in recs if "loadavg_1m" in r]
    print(f"Command: `{a.command}` (commit {a.commit}; {a.machine}; "
          f"{len(repeats)} repeat(s): median, range in brackets; machine load average "
          f"{min(load, default=0):.1f} to {max(load, default=0):.1f} over the steps)\n")
    print("| beacons | ingest, drain off (uploads/s) | ingest, drain on | drain's cost "
          "| drain rate during load | drain rate to lag 0 | lag during load, max uploads "
          "| oldest undrained, max s | caught up after load, s | errors |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    cpu_rows = []
    for n in sizes:
        off, on = get("off", n), get("on", n)
        both = [r for r in repeats if r in off and r in on]
        cost = [100.0 * (1 - on[r]["ingest"] / off[r]["ingest"]) for r in both
                if off[r]["ingest"]]
        errs = sum(r["errors"] for r in list(off.values()) + list(on.values()))
        print(f"| {n} | {fmt([r['ingest'] for r in off.values()])} "
              f"| {fmt([r['ingest'] for r in on.values()])} | {fmt(cost, 1, pct=True)} "
              f"| {fmt([r['drain_during'] for r in on.values()])} "
              f"| {fmt([r['drain_overall'] for r in on.values()])} "
              f"| {fmt([r['lag_max'] for r in on.values()])} "
              f"| {fmt([r['oldest_max_s'] for r in on.values()])} "
              f"| {fmt([r['catchup_s'] for r in on.values()], 1)} | {errs} |")
        cpu_cost = [100.0 * (1 - on[r]["per_cpu_s"] / off[r]["per_cpu_s"]) for r in both
                    if off[r]["per_cpu_s"]]
        b_cost = [100.0 * (1 - on[r].get("per_beacon_cpu_s", 0) / off[r]["per_beacon_cpu_s"])
                  for r in both if off[r].get("per_beacon_cpu_s")]
        cpu_rows.append(f"| {n} | {fmt([r['per_cpu_s'] for r in off.values()])} "
                        f"| {fmt([r['per_cpu_s'] for r in on.values()])} "
                        f"| {fmt(cpu_cost, 1, pct=True)} "
                        f"| {fmt([r.get('per_beacon_cpu_s', 0) for r in off.values()])} "
                        f"| {fmt([r.get('per_beacon_cpu_s', 0) for r in on.values()])} "
                        f"| {fmt(b_cost, 1, pct=True)} "
                        f"| {fmt([r.get('nats_cpu_s', 0) for r in on.values()], 2)} |")
    print()
    print("Per second of the fleet's CPU time (beacons + HAProxy + nats-server, "
          "/proc/PID/stat), the same steps:\n")
    print("| beacons | uploads / fleet CPU s, drain off | drain on | drain's cost "
          "| uploads / beacons' CPU s, drain off | drain on | drain's cost "
          "| nats-server CPU s, drain on |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print("\n".join(cpu_rows))
    print()
    print("At 80% of the drain-off capacity (open loop, Poisson arrivals, drain on):\n")
    print("| beacons | offered (uploads/s) | answered 201 (uploads/s) | lag, max uploads "
          "| oldest undrained, max s | under 5 s | p99 latency ms | errors |")
    print("| ---: | ---: | ---: | ---: | ---: | :---: | ---: | ---: |")
    for n in sizes:
        at, off = get("at80", n), get("off", n)
        offered = [0.8 * off[r]["ingest"] for r in at if r in off]
        oldest = [r["oldest_max_s"] for r in at.values()]
        ok = sum(1 for v in oldest if v < 5)
        print(f"| {n} | {fmt(offered)} | {fmt([r['ingest'] for r in at.values()])} "
              f"| {fmt([r['lag_max'] for r in at.values()])} | {fmt(oldest)} "
              f"| {ok} of {len(oldest)} | {fmt([r['p99_ms'] for r in at.values()], 1)} "
              f"| {sum(r['errors'] for r in at.values())} |")


if __name__ == "__main__":
    main()
