#!/usr/bin/env python3
"""The table of perf/memif.sh from its JSON lines.

    memif_report.py MEMIF.JSONL [CPU MODEL]

Per scenario, the median [min-max] over the repeats of beacond's cost per
201: over memif its worker's work time (turns that did work) times the
share of the wall clock its thread was on a CPU (on a shared machine a
preempted turn counts its time away as work; this assumes preemption falls
on working and idle turns alike), on the kernel transport its CPU time
(user + system: the kernel's TCP work is charged to it). Over memif the CPU
time of beacond's other threads (the store's io_uring workers, the control
thread) is added to the worker's work. Cycles are the microseconds at the TSC's rate
(/proc/cpuinfo "cpu MHz", a VM's nominal clock). Ratios: the kernel's cost
over memif's (how much cheaper the DPDK path is) and the TLS ceiling's
cost over memif's (issue 18 item 4 asks >= 0.9 for full handshakes and a
kernel/memif ratio >= 1.5 for 16 KiB uploads).
"""
import json
import statistics
import sys

SCENARIOS = [("full13", "full TLS 1.3 + 1 KiB PUT", "full13"),
             ("resume13", "resumed TLS 1.3 + 1 KiB PUT", "resume13"),
             ("ka16k", "keep-alive 16 KiB PUT", None),
             ("ka1m", "keep-alive 1 MiB PUT", None)]


def cpu_mhz():
    for line in open("/proc/cpuinfo"):
        if line.lower().startswith("cpu mhz"):
            return float(line.split(":")[1])
    return 0.0


def spread(values, fmt="{:,.1f}"):
    if not values:
        return "-"
    return (fmt.format(statistics.median(values)) + " [" + fmt.format(min(values)) + "-"
            + fmt.format(max(values)) + "]")


def main():
    rows, ceiling = [], {}
    for line in open(sys.argv[1]):
        r = json.loads(line)
        if r.get("ceiling"):
            ceiling[r["line"]["scenario"]] = r["line"]["server_us_per_handshake"]
        else:
            rows.append(r)
    mhz = cpu_mhz()
    model = sys.argv[2].strip() if len(sys.argv) > 2 else "?"

    def cost(r):  # microseconds of beacond per 201
        if r["transport"] == "dpdk":  # the worker's work, its other threads' CPU
            spent = r["work_s"] * r["worker_on_cpu"] + max(r["cpu_s"] - r["worker_cpu_s"], 0)
        else:
            spent = r["cpu_s"]
        return spent * 1e6 / r["uploads"] if r["uploads"] else float("nan")

    print(f"CPU: {model}, TSC {mhz:,.0f} MHz. Median [min-max] over "
          f"{max((r['repeat'] for r in rows), default=0)} runs.\n")
    print("| scenario | memif: work us per upload | memif: cycles per upload "
          "| kernel: CPU us per upload | kernel / memif | ceiling us | ceiling / memif "
          "| memif MB per work s | kernel MB per CPU s | memif worker on CPU | errors |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for key, name, ck in SCENARIOS:
        d = [r for r in rows if r["scenario"] == key and r["transport"] == "dpdk"]
        k = [r for r in rows if r["scenario"] == key and r["transport"] == "kernel"]
        dc, kc = [cost(r) for r in d], [cost(r) for r in k]
        ratio = [cost(b) / cost(a) for a in d for b in k if a["repeat"] == b["repeat"]]
        cl = ceiling.get(ck) if ck else None
        mb_d = [r["body_bytes"] / 1e6 / (cost(r) * r["uploads"] / 1e6) for r in d
                if r["uploads"]]
        on_cpu = [r["worker_on_cpu"] * 100 for r in d]
        mb_k = [r["body_bytes"] / 1e6 / r["cpu_s"] for r in k if r["cpu_s"]]
        errors = sum(r["errors"] for r in d + k)
        print(f"| {name} | {spread(dc)} | {spread([c * mhz for c in dc], '{:,.0f}')} "
              f"| {spread(kc)} | {spread(ratio, '{:.2f}x')} | {f'{cl:.1f}' if cl else '-'} "
              f"| {spread([cl / c for c in dc], '{:.2f}x') if cl else '-'} "
              f"| {spread(mb_d) if ck is None else '-'} | {spread(mb_k) if ck is None else '-'} "
              f"| {spread(on_cpu, '{:.0f}%')} | {errors} |")
    res = [f"{r['transport']} {r['sim']['resumed_fraction']:.0%}" for r in rows
           if r["scenario"] == "resume13"]
    if res:
        print(f"\nResumed fractions (resume13): {', '.join(res)}.")


if __name__ == "__main__":
    main()
