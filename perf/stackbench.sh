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
# 5), pinned to CPU N (default 0); prints each run's table and JSON lines
# to perf/out/stackbench.jsonl, then the median of each figure over the
# runs. The EAL runs without hugepages on a net_ring vdev: "--no-huge -m 256
# --no-pci --no-shconf --no-telemetry --vdev=net_ring0 -l CPU". What it
# measures and leaves out: perf/README.md, "Stack alone (synthetic port)".
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=3
args=()
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift 2 ;;
	--seconds|--cpu|--conns|--scenarios) args+=("$1" "$2"); shift 2 ;;
	-h|--help) sed -n '2,16p' "$0"; exit 0 ;;
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
for i in $(seq "$runs"); do
	echo "## run $i of $runs"
	build/perf/stackbench "${args[@]}" 2>/dev/null | tee -a "$jsonl" | grep -v '^{'
done
python3 - "$jsonl" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        d = json.loads(line)
        rows.setdefault(d["scenario"], []).append(d)
print("\n## median of %d run(s)\n" % max(len(v) for v in rows.values()))
print("| scenario | conns | per CPU s (stack + peer) | stack share | per stack CPU s "
      "| Gbit/s per stack CPU s | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for name, ds in rows.items():
    med = lambda k: statistics.median(d[k] for d in ds)
    gbit = "%.1f" % med("gbit_per_stack_cpu_s") if ds[0]["payload"] else "-"
    print("| %s | %s | %s | %.0f%% | %s | %s | %d |" % (
        name, ds[0]["conns"] or "-", format(round(med("per_cpu_s")), ","),
        100 * med("stack_share"), format(round(med("per_stack_cpu_s")), ","), gbit,
        sum(d["errors"] + d["bad_counters"] for d in ds)))
PY
