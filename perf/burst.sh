#!/usr/bin/env bash
# perf/burst.sh: beacond under bursts of new agents (issue 18 item 7).
#
#   perf/burst.sh [--runs N] [--agents "3000 20000"] [--seconds S]
#                 [--beacond PATH] [--label NAME] [--out FILE] [--somaxconn N]
#                 [--capture]
#
# Each run, on a freshly started beacond (one worker, pinned to CPU 0,
# unprivileged when run as root, default [limits]: max_handshakes_in_progress
# 1,024) with agentsim pinned to CPU 1, full TLS 1.3 mutual handshakes with a
# 1 KiB PUT each:
#   capacity   closed loop, 32 connections, S seconds (default 10): the
#              handshakes (with their upload) per wall second it sustains;
#   open0.9    open loop (Poisson arrivals) at 0.9 x that capacity, S/2 s;
#   open2      open loop at 2 x that capacity, S/2 s;
#   at3000...  each --agents N: N agents connecting at the same instant
#              (agentsim --burst; one process per 10,000 agents, each from
#              its own 127.0.0.x, for the 20,000 open files a process may
#              have here and the ephemeral ports of one address).
# Reported per step: uploads answered 201, 503s, agents closed without an
# answer (agentsim's handshake and closed errors: a reset or EOF before any
# response), timeouts, p50/p99 latency from arrival, beacond's
# accept-and-close refusals (refused_handshakes, connections_refused), the
# kernel's listen queue overflows (TcpExtListenOverflows, machine-wide), the
# peak of beacond_store_uploads_open, and whether every acknowledged upload
# is intact: the index holds at least as many new uploads as agents got 201
# (more when an agent gave up, or the closed-loop step ended, after beacond
# committed its upload but before the 201 reached it), and `beaconctl
# uploads get` (it checks the stored checksum) reads back a sample of 50.
#
# Each open-loop step also says where each upload's time went (agentsim
# --stages), and how busy beacond's CPU and the load generator's were.
# --capture (root) records the 0.9x step's packets (tcpdump on CPU 1, the
# client's side) and splits each connection's time into the server's share
# and the client's by who sent the packet that ends each stage
# (perf/wire_stages.py): on this two-core machine the load generator is
# itself near saturation at 0.9x, and its own queueing is in the figures.
#
# --somaxconn N (root): beacond and the agents run in a network namespace
# of their own whose net.core.somaxconn is N (the listen queue beacond gets
# is min(65535, somaxconn)); without it, the machine's (4,096 by default).
#
# JSON lines go to perf/out/burst.jsonl; the table (median and range over
# the runs) to --out (default perf/out/burst.md). --beacond runs another
# build (e.g. an older commit's) under --label.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=3
agents="3000 20000"
seconds=10
beacond=$root/build/beacond
label=
result=$root/perf/out/burst.md
somaxconn=
capture=
ns=
invocation="perf/burst.sh $*"

while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift ;;
	--agents) agents=$2; shift ;;
	--seconds) seconds=$2; shift ;;
	--beacond) beacond=$(realpath "$2"); shift ;;
	--label) label=$2; shift ;;
	--out) result=$2; shift ;;
	--somaxconn) somaxconn=$2; shift ;;
	--capture) capture=1 ;;
	-h|--help) sed -n '2,46p' "$0"; exit 0 ;;
	*) echo "burst.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done
[ -n "$label" ] || label=$(git -C "$root" rev-parse --short HEAD)
# this invocation's rows in the JSON lines, which keep earlier ones too
session=$(date -u +%Y%m%dT%H%M%SZ)-$$

out=$root/perf/out
mkdir -p "$out"
jsonl=$out/burst.jsonl
run=$(mktemp -d /tmp/beacon-burst.XXXXXX)
chmod 755 "$run"
port=11543
server_pid=
sampler_pid=
capture_pid=

log() { echo "burst: $*" >&2; }

cleanup() {
	stop_capture
	stop_sampler
	stop_server
	[ -z "$ns" ] || ip netns del "$ns" 2>/dev/null || true
	cp "$run/beacond.log" "$out/burst-beacond.log" 2>/dev/null || true
	rm -rf "$run"
}
trap cleanup EXIT

# --- set-up -----------------------------------------------------------------

# the prefix that runs a command in the benchmark's namespace (if any)
nsx=()
if [ -n "$somaxconn" ]; then
	ns=bburst$$
	nsx=(ip netns exec "$ns")
	ip netns add "$ns"
	ip netns exec "$ns" ip link set lo up
	ip netns exec "$ns" ip addr add 127.0.0.2/8 dev lo 2>/dev/null || true
	ip netns exec "$ns" sysctl -q -w net.core.somaxconn="$somaxconn"
	log "namespace $ns, net.core.somaxconn $somaxconn"
fi

cd "$root"
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build beacond beaconctl perf/agentsim >"$run/ninja.log" 2>&1 ||
	{ cat "$run/ninja.log" >&2; exit 1; }
agentsim=$root/build/perf/agentsim
beaconctl=$root/build/beaconctl
. "$root/perf/lib.sh" # stop_server, wait_ready, wait_line, beacond_conf, bench_pki
# agent certificates made before any server runs
bench_pki "$agentsim"
sim_common="--tls 1.3 --body-size 1k --certs 1000 --ca-cert $out/pki/agents-ca.pem
--ca-key $out/pki/agents-ca.key --cache $out/agents --quiet"

unprivileged() {
	if [ "$(id -u)" = 0 ]; then
		chown -R nobody:nogroup "$run"
		exec "${nsx[@]}" setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
	fi
	exec "${nsx[@]}" "$@"
}

start_server() {
	rm -rf "$run/data"
	mkdir -p "$run/data" "$run/dl"
	{ beacond_conf kernel "127.0.0.1:$port"; cat <<-EOF

	[limits]
	handshake_timeout = 60s
	max_connections = 19000

	[log]
	access = no
	EOF
	} >"$run/beacond.conf"
	: >"$run/beacond.log"
	( ulimit -n 20000; unprivileged taskset -c 0 "$beacond" -c "$run/beacond.conf" ) \
		>>"$run/beacond.log" 2>&1 &
	server_pid=$!
	wait_ready "$run/beacond.log" "$server_pid" && return 0
	log "beacond did not start:"; cat "$run/beacond.log" >&2
	exit 1
}

stats() { "$beaconctl" --socket "$run/beacond.sock" --json stats; }

# The peak of the store's uploads in flight, sampled every second from
# CPU 1 (the load generator's side). Every 50 ms, as it was, the sampler's
# beaconctl and jq took enough of the client's CPU that arrivals fell
# behind their schedule: at 0.9x on a quiet machine, p99 3.0 to 3.2 s with
# it and 169 to 181 ms without (2026-12-05).
start_sampler() {
	(
		peak=0
		while :; do
			v=$(stats 2>/dev/null | jq '.store_uploads_open // 0' 2>/dev/null || echo 0)
			[ "${v:-0}" -gt "$peak" ] && { peak=$v; echo "$peak" >"$run/peak"; }
			sleep 1
		done
	) &
	sampler_pid=$!
	taskset -cp 1 "$sampler_pid" >/dev/null
	echo 0 >"$run/peak"
}

stop_sampler() {
	[ -n "$sampler_pid" ] || return 0
	kill "$sampler_pid" 2>/dev/null || true
	wait "$sampler_pid" 2>/dev/null || true
	sampler_pid=
}

# tcpdump of the server port, ready once it says it is listening; only the
# headers and the first bytes of each segment are kept. Not in immediate
# mode: a wake-up per packet took so much of CPU 1 at 0.9x that the load
# generator fell seconds behind (p99 2.8 s against 155 ms).
start_capture() { # NAME
	: >"$run/capture.err"
	"${nsx[@]}" taskset -c 1 tcpdump -i lo -n -s 96 -B 65536 --time-stamp-precision=nano \
		-w "$out/burst-$1.pcap" "tcp port $port" 2>"$run/capture.err" &
	capture_pid=$!
	wait_line "$run/capture.err" "$capture_pid" "listening on" 100 && return 0
	log "tcpdump did not start: $(cat "$run/capture.err")"
	exit 1
}

# The kernel hands packets to tcpdump a ring block at a time, a block once
# it is full or 1 s old; one still filling when tcpdump is told to stop is
# lost. So the stop waits out that second; the report says how many of the
# step's uploads the capture holds whole.
stop_capture() {
	[ -n "$capture_pid" ] || return 0
	sleep 1.5
	kill -INT "$capture_pid" 2>/dev/null || true
	wait "$capture_pid" 2>/dev/null || true
	capture_pid=
}

# The capture's split of each connection's time; {} when there was none.
capture_stages() { # NAME
	[ -f "$out/burst-$1.pcap" ] && [ -s "$run/capture.err" ] || { echo '{}'; return; }
	local dropped
	dropped=$(sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' "$run/capture.err")
	python3 "$root/perf/wire_stages.py" "$out/burst-$1.pcap" "$port" --json |
		jq -c --argjson d "${dropped:-null}" '. + {capture_drops: $d}'
	rm -f "$run/capture.err"
}

listen_overflows() {
	"${nsx[@]}" cat /proc/net/netstat | awk '/^TcpExt:/ {
		if (!h) { for (i = 1; i <= NF; i++) n[$i] = i; h = 1 } else print $n["ListenOverflows"] }'
}

# Every acknowledged upload is in the index, and a sample reads back with
# its checksum verified. Prints {"indexed": N, "sample_ok": K, "sample": S}.
check_store() { # UPLOADS_BEFORE
	local ids n ok=0 total
	"$beaconctl" --data-dir "$run/data" --json uploads list --limit 0 >"$run/list.json" 2>/dev/null
	total=$(wc -l <"$run/list.json")
	ids=$(jq -r '.id' "$run/list.json" | tail -n +"$(($1 + 1))" | shuf -n 50 || true)
	n=0
	for id in $ids; do
		n=$((n + 1))
		"$beaconctl" --data-dir "$run/data" uploads get "$id" >/dev/null 2>&1 && ok=$((ok + 1))
	done
	jq -nc --argjson i "$((total - $1))" --argjson k "$ok" --argjson s "$n" \
		'{indexed: $i, sample_ok: $k, sample: $s}'
}

indexed_now() {
	"$beaconctl" --data-dir "$run/data" --json uploads list --limit 0 2>/dev/null | wc -l
}

# One step: agentsim processes with ARGS (one per SOURCE), then the figures.
step() { # RUN NAME OFFERED "SOURCES" ARGS...
	local r=$1 name=$2 offered=$3 sources=$4 i=0 pids=() s0 s1 o0 o1 u0 store peak wire='{}'
	shift 4
	s0=$(stats)
	o0=$(listen_overflows)
	u0=$(indexed_now)
	[ -z "$capture" ] || [ "$name" != open0.9 ] || start_capture "$name"
	start_sampler
	for src in $sources; do
		( ulimit -n 20000; exec "${nsx[@]}" taskset -c 1 "$agentsim" $sim_common --source "$src" "$@" \
			"https://127.0.0.1:$port" ) >"$run/sim$i.json" 2>"$run/sim$i.err" &
		pids+=($!)
		i=$((i + 1))
	done
	for p in "${pids[@]}"; do wait "$p" || log "$name: agentsim exited with $?"; done
	stop_sampler
	if [ -n "$capture_pid" ]; then
		stop_capture
		wire=$(capture_stages "$name")
	fi
	peak=$(cat "$run/peak")
	o1=$(listen_overflows)
	# the workers publish their counters every 100 ms
	sleep 0.3
	s1=$(stats)
	store=$(check_store "$u0")
	cat "$run"/sim*.err | head -5 | sed 's/^/    /' >&2
	jq -s -c --arg lbl "$label" --arg session "$session" --argjson run "$r" --arg step "$name" \
		--argjson offered "$offered" --argjson s0 "$s0" --argjson s1 "$s1" \
		--argjson ovf "$((o1 - o0))" --argjson store "$store" --argjson peak "$peak" \
		--argjson wire "$wire" '
		def sum(f): map(f) | add;
		{"label": $lbl, session: $session, run: $run, step: $step, offered_per_s: $offered,
		 agents: (sum(.uploads) + sum(.errors | add) - sum(.errors.overload)),
		 duration_s: (map(.duration_s) | max),
		 handshakes_per_s: sum(.handshakes_per_s), uploads_201: sum(.uploads),
		 http_503: sum(.http_503),
		 closed_unanswered: (sum(.errors.handshake) + sum(.errors.closed)),
		 timeouts: sum(.errors.timeout), connect_errors: sum(.errors.connect),
		 other_errors: (sum(.errors.status) - sum(.http_503) + sum(.errors.protocol)),
		 p50_ms: (map(.latency_ms.p50) | max), p99_ms: (map(.latency_ms.p99) | max),
		 client_cpu_busy: (sum(.client_cpu_s) / (map(.duration_s) | max)),
		 server_cpu_busy: (if .[0].server_cpu_s then sum(.server_cpu_s) / (map(.duration_s) | max) else null end),
		 stages_ms: (if length == 1 then .[0].stages_ms else null end),
		 wire_ms: (if $wire == {} then null else $wire end),
		 commit_ms: (($s1.commit_latency_count - $s0.commit_latency_count) as $n |
			[range(0; $s1.commit_latency_bucket | length) |
			 $s1.commit_latency_bucket[.] - $s0.commit_latency_bucket[.]] as $b |
			{mean: (if $n > 0 then ($s1.commit_latency_sum_us - $s0.commit_latency_sum_us) / $n / 1000 else null end),
			 p99_le: (if $n > 0 then ([range(0; $b | length) | select($b[.] >= 0.99 * $n)][0] as $i |
				if $i < ($s1.commit_latency_le_us | length) then $s1.commit_latency_le_us[$i] / 1000 else "inf" end) else null end)}),
		 refused_handshakes: ($s1.refused_handshakes - $s0.refused_handshakes),
		 connections_refused: ($s1.connections_refused - $s0.connections_refused),
		 listen_overflows: $ovf, uploads_open_peak: $peak,
		 store_commits: ($s1.store_commits - $s0.store_commits),
		 store_uploads_committed: ($s1.store_uploads_committed - $s0.store_uploads_committed),
		 indexed: $store.indexed, sample_ok: $store.sample_ok, sample: $store.sample}' \
		"$run"/sim*.json | tee -a "$jsonl" >"$run/step.json"
	rm -f "$run"/sim*.json "$run"/sim*.err
	log "$(jq -c '{step, offered_per_s, uploads_201, http_503, closed_unanswered, timeouts, p99_ms, refused_handshakes, listen_overflows, uploads_open_peak, indexed}' "$run/step.json")"
}

# --- runs -------------------------------------------------------------------

capacities=()
for r in $(seq "$runs"); do
	start_server
	log "run $r: beacond $label (pid $server_pid)"
	step "$r" capacity 0 127.0.0.1 --mode full --concurrency 32 --duration "$seconds"
	cap=$(jq '.handshakes_per_s' "$run/step.json")
	capacities+=("$cap")
	half=$(awk -v s="$seconds" 'BEGIN { printf "%g", s / 2 }')
	for f in 0.9 2; do
		rate=$(awk -v c="$cap" -v f="$f" 'BEGIN { printf "%d", c * f }')
		# --requests rather than --duration: every arrival's outcome counts,
		# the last ones' too
		n=$(awk -v r="$rate" -v s="$half" 'BEGIN { printf "%d", r * s }')
		step "$r" "open$f" "$rate" 127.0.0.1 --mode full --rate "$rate" --requests "$n" \
			--concurrency 15000 --timeout 60 --stages --server-pid "$server_pid"
		sleep 2
	done
	for n in $agents; do
		procs=$(( (n + 9999) / 10000 ))
		srcs=
		for i in $(seq "$procs"); do srcs="$srcs 127.0.0.$((i + 1))"; done
		each=$(( n / procs ))
		step "$r" "at$n" 0 "$srcs" --mode full --burst --requests "$each" \
			--concurrency "$each" --timeout 120
		sleep 2
	done
	stop_server
	sleep 2
done

# --- report -----------------------------------------------------------------

python3 "$root/perf/burst_report.py" "$jsonl" "$session" "$invocation" >"$result"
cat "$result"
