#!/usr/bin/env bash
# perf/memif.sh: the DPDK transport end to end with no kernel on the path
# (issue 18 item 4). beacond (backend = dpdk) and perf/agentsim's DPDK mode
# (beacond's own TCP/IP stack as the client) are two DPDK processes joined
# by a net_memif pair: frames go from one process's memory to the other's,
# and no system call carries a packet. The same work then runs on the
# kernel transport over loopback, and the TLS ceiling (perf/tlsceiling)
# in the same run.
#
#   perf/memif.sh [--duration S] [--repeat N] [--scenarios "full13 resume13
#                 ka16k ka1m"] [--out FILE]                  (root: the EAL)
#
# Scenarios (32 connections, 1,000 agent certificates): full TLS 1.3 mutual
# handshakes with a 1 KiB PUT each, resumed ones (100 agents, tickets), and
# keep-alive PUTs of 16 KiB and of 1 MiB; each runs S seconds (default 10),
# the transports interleaved, N times (default 3).
#
# What is measured for beacond, over each scenario, by its own counters
# (beaconctl stats) and /proc/PID/stat:
# - memif: its worker's *work* time (beacond_worker_work_seconds_total: the
#   loop turns that received a frame or completed I/O; a polling worker
#   burns its core whatever the load, so its CPU time says nothing), plus
#   the CPU time of its other threads (the store's io_uring workers doing
#   its writes and fdatasyncs, the control thread), per 201, in
#   microseconds and in TSC cycles;
# - kernel: its CPU time (utime + stime of every thread: the kernel's TCP
#   work done on its behalf is charged to it) per 201.
# beacond has 1 worker pinned to CPU 0; agentsim runs on CPU 1. The EALs
# run without hugepages (-m 256 holds beacond's 16,383 mbufs): "--no-huge -m
# 256 --no-pci --no-telemetry --vdev=net_memif0,role=server|client,socket=
# RUN/memif.sock,socket-abstract=no -l CPU --file-prefix ...", beacond at
# 198.18.0.1/15, agentsim at 198.18.0.2/15 (addresses exist only inside the
# memif link). Writes perf/out/memif.md and perf/out/memif.jsonl. Holds
# /tmp/beacon-dpdk.lock while it runs (one DPDK run at a time on a machine,
# as the tests do).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
seconds=10
repeat=3
scenarios="full13 resume13 ka16k ka1m"
results=
while [ $# -gt 0 ]; do
	case $1 in
	--duration) seconds=$2; shift 2 ;;
	--scenarios) scenarios=$2; shift 2 ;;
	--repeat) repeat=$2; shift 2 ;;
	--out) results=$2; shift 2 ;;
	-h|--help) sed -n '2,32p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "perf/memif.sh: needs root (the DPDK EAL)" >&2; exit 1; }
exec 9>/tmp/beacon-dpdk.lock
flock -w 900 9 || { echo "perf/memif.sh: /tmp/beacon-dpdk.lock still held after 900 s" >&2; exit 1; }

out=$root/perf/out
run=$(mktemp -d /tmp/bmemif.XXXXXX)
jsonl=$out/memif.jsonl
results=${results:-$out/memif.md}
tag=$(( $$ % 100000 ))
# A port free on loopback now (the kernel transport's run listens there).
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
server_pid=
: >"$run/commands.txt"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

cleanup() {
	stop_server
	rm -rf "/var/run/dpdk/bpm$tag-s" "/var/run/dpdk/bpm$tag-c" "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$root/perf/lib.sh" # stop_server, wait_ready, beacond_conf, bench_pki

cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
worker_ticks() { # PID: utime + stime of its thread beacond-w0
	local t
	for t in /proc/"$1"/task/*; do
		[ "$(cat "$t/comm")" = beacond-w0 ] && { sed 's/^.*) //' "$t/stat" | awk '{ print $12 + $13 }'; return; }
	done
	echo 0
}

cd "$root"
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build beacond beaconctl perf/agentsim perf/tlsceiling >"$run/ninja.log" 2>&1 ||
	{ cat "$run/ninja.log" >&2; exit 1; }
agentsim=$root/build/perf/agentsim
"$agentsim" --help 2>&1 | grep -q -- '--dpdk' ||
	{ echo "perf/memif.sh: build/perf/agentsim has no --dpdk (a build without DPDK?)" >&2; exit 1; }
mkdir -p "$out"
bench_pki "$agentsim"

eal() { # ROLE CPU: at most 199 characters ([dpdk] eal_args), so $run stays short
	echo "--no-huge -m 256 --no-pci --no-telemetry" \
		"--vdev=net_memif0,role=$1,socket=$run/memif.sock,socket-abstract=no" \
		"-l $2 --file-prefix bpm$tag-${1:0:1} --log-level=warning"
}

write_conf() { # BACKEND
	rm -rf "$run/data" "$run/dl"
	mkdir -p "$run/data" "$run/dl"
	beacond_conf "$1" "$( [ "$1" = dpdk ] && echo 0.0.0.0 || echo 127.0.0.1 ):$port" \
		>"$run/beacond-$1.conf"
	if [ "$1" = dpdk ]; then
		cat >>"$run/beacond-$1.conf" <<-EOF

		[dpdk]
		eal_args = $(eal server 0)
		port = 0
		address = 198.18.0.1/15
		mbufs = 16383
		EOF
	fi
}

start_server() { # BACKEND
	write_conf "$1"
	local cmd="taskset -c 0 $root/build/beacond -c $run/beacond-$1.conf"
	echo "$cmd" >>"$run/commands.txt"
	$cmd >"$run/beacond-$1.log" 2>&1 &
	server_pid=$!
	wait_ready "$run/beacond-$1.log" "$server_pid" && return 0
	cat "$run/beacond-$1.log" >&2
	return 1
}

stat_of() { # KEY...: beacond's counters, summed where an array (per worker)
	"$root/build/beaconctl" --socket "$run/beacond.sock" --json stats |
		python3 -c 'import json, sys
s = json.load(sys.stdin)
print(" ".join(str(sum(v) if isinstance(v, list) else v) for v in (s[k] for k in sys.argv[1:])))' "$@"
}

scenario_args() { # NAME
	case $1 in
	full13) echo "--mode full --certs 1000 --body-size 1k" ;;
	resume13) echo "--mode resume --certs 100 --body-size 1k" ;;
	ka16k) echo "--mode keepalive --certs 1000 --body-size 16k" ;;
	ka1m) echo "--mode keepalive --certs 1000 --body-size 1M" ;;
	esac
}

run_one() { # BACKEND SCENARIO REPEAT
	local backend=$1 sc=$2 rep=$3 target=https://127.0.0.1:$port dpdk=()
	if [ "$backend" = dpdk ]; then
		target=https://198.18.0.1:$port
		dpdk=(--dpdk "$(eal client 1)" --dpdk-addr 198.18.0.2/15)
	fi
	start_server "$backend" || return 1
	local before cpu0 after cpu1 w0 w1 t0 t1
	before=$(stat_of responses_201 worker_work_ns worker_busy_ns)
	cpu0=$(cpu_ticks "$server_pid") w0=$(worker_ticks "$server_pid") t0=$(date +%s.%N)
	# shellcheck disable=SC2046
	taskset -c 1 "$agentsim" $(scenario_args "$sc") --concurrency 32 \
		--ca-cert "$out/pki/agents-ca.pem" --ca-key "$out/pki/agents-ca.key" \
		--cache "$out/agents" --duration "$seconds" --quiet "${dpdk[@]}" "$target" \
		>"$run/sim.json" 2>"$run/sim.err" || { cat "$run/sim.err" >&2; stop_server; return 1; }
	after=$(stat_of responses_201 worker_work_ns worker_busy_ns)
	cpu1=$(cpu_ticks "$server_pid") w1=$(worker_ticks "$server_pid") t1=$(date +%s.%N)
	stop_server
	python3 - "$backend" "$sc" "$rep" "$before" "$after" "$cpu0" "$cpu1" \
		"$(getconf CLK_TCK)" "$run/sim.json" "$w0" "$w1" "$t0" "$t1" >>"$jsonl" <<-'EOF'
	import json, sys
	backend, sc, rep = sys.argv[1], sys.argv[2], int(sys.argv[3])
	b = [int(x) for x in sys.argv[4].split()]
	a = [int(x) for x in sys.argv[5].split()]
	hz = int(sys.argv[8])
	cpu_s = (int(sys.argv[7]) - int(sys.argv[6])) / hz
	sim = json.load(open(sys.argv[9]))
	# The share of the wall clock the worker thread was on a CPU: a turn
	# that was preempted counts its time away as work.
	on_cpu = (int(sys.argv[11]) - int(sys.argv[10])) / hz / (float(sys.argv[13]) - float(sys.argv[12]))
	n = a[0] - b[0]
	print(json.dumps({"transport": backend, "scenario": sc, "repeat": rep, "uploads": n,
	                  "work_s": (a[1] - b[1]) / 1e9, "busy_s": (a[2] - b[2]) / 1e9,
	                  "cpu_s": cpu_s, "worker_on_cpu": min(on_cpu, 1.0),
	                  "worker_cpu_s": (int(sys.argv[11]) - int(sys.argv[10])) / hz,
	                  "body_bytes": sim["body_bytes"],
	                  "resumed_fraction": sim["resumed_fraction"],
	                  "errors": sum(sim["errors"].values()), "sim": sim}))
	EOF
	log "$backend $sc #$rep: $(tail -1 "$jsonl" | cut -c1-160)"
}

: >"$jsonl"
log "TLS ceiling (perf/tlsceiling, CPU 0)"
taskset -c 0 build/perf/tlsceiling --server-cert "$out/pki/server.pem" \
	--server-key "$out/pki/server.key" --ca "$out/pki/agents-ca.pem" \
	--client-cert "$out/pki/agent1.pem" --client-key "$out/pki/agent1.key" \
	--kinds "full13 resume13" --json >"$run/ceiling.json"
sed 's/^/{"ceiling": true, "line": /; s/$/}/' "$run/ceiling.json" >>"$jsonl"
for rep in $(seq "$repeat"); do
	for sc in $scenarios; do
		for backend in dpdk kernel; do
			run_one "$backend" "$sc" "$rep"
		done
	done
done
python3 "$root/perf/memif_report.py" "$jsonl" "$(grep -m1 -i 'model name' /proc/cpuinfo | cut -d: -f2)" \
	>"$results"
cat "$results"
