#!/usr/bin/env bash
# perf/stackbench.sh: the DPDK transport's TCP/IPv4 stack alone on a
# synthetic port (issue 5 item 6): SYN-to-ESTABLISHED handshakes and
# established data segments per second of one core's CPU. No TLS, HTTP or
# store; no kernel, no NIC.
#
#   perf/stackbench.sh [--runs N] [--seconds S] [--cpu N] [--conns N]   (root: the EAL)
#
# Builds build/perf/stackbench (meson setup build first if needed) and runs
# it N times (default 3), each with every scenario for S seconds (default
# 5), pinned to CPU N (default 0); prints each run's table (JSON lines in
# perf/out/stackbench.jsonl, stderr in perf/out/stackbench.log), then the
# median of each figure over the runs and its range. The EAL runs without
# hugepages on a net_ring vdev:
# "--no-huge -m 256 --no-pci --no-shconf --no-telemetry --vdev=net_ring0
# -l CPU". What it measures and leaves out: perf/README.md, "The stack
# alone (issue 5)".
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=3
args=()
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--seconds|--cpu|--conns|--scenarios) args+=("$1" "$2"); shift 2 ;;
	-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "perf/stackbench.sh: needs root (the DPDK EAL)" >&2; exit 1; }

cd "$root"
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build perf/stackbench >/dev/null
[ -x build/perf/stackbench ] || { echo "perf/stackbench.sh: no build/perf/stackbench (a build without DPDK?)" >&2; exit 1; }

mkdir -p perf/out
jsonl=perf/out/stackbench.jsonl
: >"$jsonl"
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo ?)," \
	"$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1))"
echo "# build/perf/stackbench ${args[*]}"
log=perf/out/stackbench.log
: >"$log"
for i in $(seq "$runs"); do
	echo "## run $i of $runs"
	rc=0
	out=$(build/perf/stackbench "${args[@]}" 2>>"$log") || rc=$?
	printf '%s\n' "$out" | grep '^{' >>"$jsonl" || true
	printf '%s\n' "$out" | grep -v '^{' || true
	[ "$rc" = 0 ] || { echo "perf/stackbench.sh: stackbench exited $rc (stderr: $log)" >&2; exit "$rc"; }
done
python3 - "$jsonl" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        d = json.loads(line)
        rows.setdefault(d["scenario"], []).append(d)
print("\n## median (min - max) of %d run(s)\n" % max(len(v) for v in rows.values()))
print("| scenario | conns | per CPU s (stack + peer) | stack share | per stack CPU s "
      "| Gbit/s per stack CPU s | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
def spread(ds, k, fmt):
    v = [d[k] for d in ds]
    return "%s (%s - %s)" % (fmt(statistics.median(v)), fmt(min(v)), fmt(max(v)))
count = lambda x: format(round(x), ",")
for name, ds in rows.items():
    gbit = spread(ds, "gbit_per_stack_cpu_s", lambda x: "%.1f" % x) if ds[0]["payload"] else "-"
    print("| %s | %s | %s | %s | %s | %s | %d |" % (
        name, ds[0]["conns"] or "-", spread(ds, "per_cpu_s", count),
        spread(ds, "stack_share", lambda x: "%.0f%%" % (100 * x)),
        spread(ds, "per_stack_cpu_s", count), gbit,
        sum(d["errors"] + d["bad_counters"] for d in ds)))
PY
