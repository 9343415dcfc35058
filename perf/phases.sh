#!/usr/bin/env bash
# perf/phases.sh: where beacond's CPU goes in one full TLS 1.3 mutual
# handshake with its durable 1 KiB upload (issue 18 item 2).
#
#   perf/phases.sh [--requests N] [--frequency HZ] [--out FILE]
#
# Starts build/beacond as bench.sh does (one worker, pinned to CPU 0,
# unprivileged, the demo PKI), warms it up, then samples it with
# `perf record -e cpu-clock --call-graph dwarf` (this machine's VM has no
# hardware cycle counter) while agentsim, pinned to CPU 1, makes N
# (default 6,000) full TLS 1.3 handshakes with a 1 KiB PUT each, 32
# connections. perf/phases.py sorts every sample of beacond's threads
# (io_uring's workers included) into one phase by its whole call chain and
# writes the table (markdown) to FILE (default perf/out/phases.md): each
# phase's share of beacond's samples and its server CPU microseconds per
# handshake (share x beacond's CPU time from /proc/PID/stat / handshakes).
# wolfSSL's P-256 assembly has no unwind tables: the P-256 operations'
# total is measured, its split into operations is estimated from
# `tlsceiling --ops` (see perf/phases.py).
# Needs root (perf on another user's process) and perf (Debian linux-perf).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
requests=6000
frequency=1999
result="$root/perf/out/phases.md"
while [ $# -gt 0 ]; do
	case $1 in
	--requests) requests=$2; shift ;;
	--frequency) frequency=$2; shift ;;
	--out) result=$2; shift ;;
	-h|--help) sed -n '2,20p' "$0"; exit 0 ;;
	*) echo "phases.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

log() { echo "phases: $*" >&2; }
out="$root/perf/out"
run=$(mktemp -d /tmp/beacon-phases.XXXXXX)
chmod 755 "$run"
pid=

cleanup() {
	if [ -n "$pid" ]; then
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$run"
}
trap cleanup EXIT

command -v perf >/dev/null || { log "perf is missing (apt-get install linux-perf)"; exit 1; }
cd "$root"
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build beacond perf/agentsim perf/tlsceiling >/dev/null
. "$root/perf/lib.sh" # wait_ready, beacond_conf, bench_pki
bench_pki build/perf/agentsim
mkdir -p "$run/data" "$run/dl"
{ beacond_conf kernel 127.0.0.1:11453; printf '\n[log]\naccess = no\n'; } >"$run/beacond.conf"
chown -R nobody:nogroup "$run"

sim() { # REQUESTS
	taskset -c 1 build/perf/agentsim --mode full --tls 1.3 --body-size 1k \
		--concurrency 32 --requests "$1" --quiet --certs 1000 \
		--ca-cert "$out/pki/agents-ca.pem" --ca-key "$out/pki/agents-ca.key" \
		--cache "$out/agents" https://127.0.0.1:11453
}

taskset -c 0 setpriv --reuid=nobody --regid=nogroup --clear-groups -- \
	build/beacond -c "$run/beacond.conf" >"$run/beacond.log" 2>&1 &
pid=$!
wait_ready "$run/beacond.log" "$pid" || { log "beacond did not start:"; cat "$run/beacond.log" >&2; exit 1; }

# warm-up: agent certificates made or loaded, io_uring workers started
sim 500 >/dev/null

cpu_ticks() { sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }'; }
cpu_s() { awk -v a="$1" -v b="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.3f", (b - a) / hz }'; }

# The cost per handshake, from a window without perf attached: perf's
# sampling (8 KiB of stack copied per sample) is charged to beacond's own
# CPU time and would inflate every phase's microseconds.
t0=$(cpu_ticks)
sim "$requests" >"$run/clean.json"
t1=$(cpu_ticks)
clean_handshakes=$(jq .handshakes "$run/clean.json")
clean_cpu_s=$(cpu_s "$t0" "$t1")

# The shares, from a second window with perf attached.
perf record -q -e cpu-clock -F "$frequency" --call-graph dwarf,8192 -p "$pid" \
	-o "$run/perf.data" 2>"$run/perf.err" &
rec=$!
sleep 1 # perf attaches to the threads first
# CA signatures verified in the window: only the signature cache's misses
# (a returning agent's certificate signature is a hit and is not verified)
sig_cache() { build/beaconctl --socket "$run/beacond.sock" --json stats |
	jq -r '"\(.sig_cache_hits) \(.sig_cache_misses)"'; }
read -r hits0 misses0 < <(sig_cache)
t0=$(cpu_ticks)
sim "$requests" >"$run/sim.json"
t1=$(cpu_ticks)
read -r hits1 misses1 < <(sig_cache)
kill -INT "$rec"
wait "$rec" || true
handshakes=$(jq .handshakes "$run/sim.json")
errors=$(jq '[.errors[]] | add' "$run/sim.json")
sampled_cpu_s=$(cpu_s "$t0" "$t1")
log "without perf: $clean_handshakes handshakes, beacond CPU $clean_cpu_s s;" \
	"with perf: $handshakes handshakes ($errors errors), beacond CPU $sampled_cpu_s s; reading the samples"

# what each P-256 operation costs alone, on the core beacond ran on
taskset -c 0 build/perf/tlsceiling --ops --json >"$run/ops.json"
nm --defined-only .deps/wolfssl/lib/libwolfssl.a 2>/dev/null |
	awk 'NF == 3 { print $3 }' | sort -u >"$run/wolfssl.syms"
perf script -i "$run/perf.data" -F pid,tid,comm,ip,sym,dso --pid "$pid" 2>/dev/null |
	python3 "$root/perf/phases.py" --wolfssl-symbols "$run/wolfssl.syms" \
		--handshakes "$clean_handshakes" --cpu-s "$clean_cpu_s" --op-costs "$run/ops.json" \
		--sampled "$handshakes $sampled_cpu_s" \
		--sig-cache "$((hits1 - hits0)) $((misses1 - misses0))" \
		--command "perf/phases.sh --requests $requests --frequency $frequency" \
		--commit "$(git rev-parse --short HEAD)" >"$result"
cat "$result"
log "wrote $result"
