#!/usr/bin/env bash
# perf/transports.sh: the whole service (TLS, HTTP, store) through the kernel
# transport against the DPDK transport, same agentsim load (issue 5 item 6).
#
#   perf/transports.sh [--duration S] [--out FILE]     (root: namespaces, tap)
#
# kernel: beacond (backend = kernel) in namespace bptsNNN at 198.18.0.1/15 on
#         one end of a veth pair; agentsim in namespace bptcNNN at
#         198.18.0.2/15 on the other end.
# dpdk:   beacond (backend = dpdk, EAL "--no-huge -m 256 --no-pci
#         --vdev=net_tap0,iface=bptNNN -l 0") in namespace bptdNNN at
#         198.18.0.1; the tap's kernel side there gets 198.18.0.2/15 and
#         agentsim runs in that namespace (the namespace's Linux TCP is the
#         peer).
# Both: beacond has 1 worker, pinned to CPU 0 (taskset -c 0); agentsim is
# pinned to CPU 1 (taskset -c 1) and run with `ip netns exec`. Scenarios
# (32 connections each): full TLS 1.3 mutual handshakes with a 1 KiB PUT,
# resumed TLS 1.3 handshakes (session tickets) with a 1 KiB PUT, keep-alive
# 16 KiB PUTs. beacond CPU = utime + stime of all its threads from
# /proc/PID/stat. Traffic only to 198.18.0.0/15 inside namespaces this
# script creates; they are deleted at the end.
#
# A tap makes the kernel do the packet work on the other side, so the DPDK
# figures say nothing about a real NIC; DPDK's polling worker burns its core
# at 100% by design, so for DPDK "per beacond CPU second" is per wall second.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
duration=10
results=$root/perf/out/transports.md
while [ $# -gt 0 ]; do
	case $1 in
	--duration) duration=$2; shift 2 ;;
	--out) results=$2; shift 2 ;;
	-h|--help) sed -n '2,25p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "perf/transports.sh: needs root (namespaces, tap)" >&2; exit 1; }

out=$root/perf/out
run=$(mktemp -d /tmp/beacond-transports.XXXXXX)
jsonl=$out/transports.jsonl
commands=$run/commands.txt
tag=$(( $$ % 100000 ))
ns_srv=bpts$tag ns_cli=bptc$tag ns_dpdk=bptd$tag
veth_s=bpvs$tag veth_c=bpvc$tag tap=bpt$tag
port=18443
hz=$(getconf CLK_TCK)
server_pid=
: >"$commands"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

cleanup() {
	stop_server
	ip netns del "$ns_srv" 2>/dev/null || true
	ip netns del "$ns_cli" 2>/dev/null || true
	ip netns del "$ns_dpdk" 2>/dev/null || true
	rm -rf "/var/run/dpdk/$ns_dpdk"
	rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_server() {
	[ -n "$server_pid" ] || return 0
	kill "$server_pid" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$server_pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
}

cpu_split() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
cpu_busy_ticks() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# --- build, PKI, agent certificates ------------------------------------------

cd "$root"
ninja -C build beacond perf/agentsim >"$run/ninja.log" 2>&1 || { cat "$run/ninja.log" >&2; exit 1; }
agentsim=$root/build/perf/agentsim
bash "$root/config/demo-pki.sh" "$out/pki" >/dev/null
mkdir -p "$run/pki"
cp "$out/pki"/{server.pem,server.key,agents-ca.pem} "$run/pki/"
"$agentsim" --certs 1000 --ca-cert "$out/pki/agents-ca.pem" \
	--ca-key "$out/pki/agents-ca.key" --cache "$out/agents" --requests 1 \
	--quiet --timeout 1 https://127.0.0.1:1 >/dev/null 2>&1 || true

write_conf() { # BACKEND
	rm -rf "$run/data" "$run/dl"
	mkdir -p "$run/data" "$run/dl"
	cat >"$run/beacond-$1.conf" <<-EOF
	[server]
	backend = $1
	listen = $( [ "$1" = dpdk ] && echo 0.0.0.0 || echo 198.18.0.1 ):$port
	workers = 1
	data_dir = $run/data
	download_dir = $run/dl
	control_socket = $run/beacond.sock

	[tls]
	cert = $run/pki/server.pem
	key = $run/pki/server.key
	issuers = $run/pki/agents-ca.pem
	EOF
	if [ "$1" = dpdk ]; then
		cat >>"$run/beacond-$1.conf" <<-EOF

		[dpdk]
		eal_args = --no-huge -m 256 --no-pci --vdev=net_tap0,iface=$tap -l 0 --file-prefix $ns_dpdk --log-level=warning
		port = 0
		address = 198.18.0.1/15
		mbufs = 16383
		EOF
	fi
}

wait_log() { # FILE PID
	for _ in $(seq 300); do
		grep -q "listening on" "$1" && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

wait_tcp() { # NS
	for _ in $(seq 300); do
		ip netns exec "$1" bash -c "exec 3<>/dev/tcp/198.18.0.1/$port" 2>/dev/null && return 0
		kill -0 "$server_pid" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# --- the two set-ups -----------------------------------------------------------

start_kernel() { # -> sets server_pid, client_ns
	ip netns add "$ns_srv"
	ip netns add "$ns_cli"
	ip link add "$veth_s" netns "$ns_srv" type veth peer name "$veth_c" netns "$ns_cli"
	ip -n "$ns_srv" addr add 198.18.0.1/15 dev "$veth_s"
	ip -n "$ns_cli" addr add 198.18.0.2/15 dev "$veth_c"
	for n in "$ns_srv" "$ns_cli"; do ip -n "$n" link set lo up; done
	ip -n "$ns_srv" link set "$veth_s" up
	ip -n "$ns_cli" link set "$veth_c" up
	write_conf kernel
	local cmd="ip netns exec $ns_srv taskset -c 0 $root/build/beacond -c $run/beacond-kernel.conf"
	echo "$cmd" >>"$commands"
	( ulimit -n 20000; exec $cmd ) >"$run/beacond-kernel.log" 2>&1 &
	server_pid=$!
	client_ns=$ns_cli
	wait_log "$run/beacond-kernel.log" "$server_pid" && wait_tcp "$ns_cli" ||
		{ cat "$run/beacond-kernel.log" >&2; return 1; }
}

start_dpdk() {
	ip netns add "$ns_dpdk"
	write_conf dpdk
	local cmd="ip netns exec $ns_dpdk taskset -c 0 $root/build/beacond -c $run/beacond-dpdk.conf"
	echo "$cmd" >>"$commands"
	( ulimit -n 20000; exec $cmd ) >"$run/beacond-dpdk.log" 2>&1 &
	server_pid=$!
	client_ns=$ns_dpdk
	wait_log "$run/beacond-dpdk.log" "$server_pid" || { cat "$run/beacond-dpdk.log" >&2; return 1; }
	ip -n "$ns_dpdk" addr add 198.18.0.2/15 dev "$tap"
	ip -n "$ns_dpdk" link set "$tap" up
	ip -n "$ns_dpdk" link set lo up
	wait_tcp "$ns_dpdk" || { cat "$run/beacond-dpdk.log" >&2; return 1; }
}

# --- scenarios -------------------------------------------------------------------

scenario_args() {
	local common="--concurrency 32 --duration $duration --quiet"
	case $1 in
	full13) echo "--mode full --tls 1.3 --body-size 1k $common" ;;
	resume13) echo "--mode resume --tls 1.3 --body-size 1k $common" ;;
	ka16k) echo "--mode keepalive --tls 1.3 --body-size 16k $common" ;;
	esac
}

run_scenario() { # TRANSPORT SCENARIO
	local args t0 t1 c0 c1 w0 window json u0 s0 u1 s1
	args="$(scenario_args "$2") --certs 1000 --ca-cert $out/pki/agents-ca.pem \
--ca-key $out/pki/agents-ca.key --cache $out/agents https://198.18.0.1:$port"
	echo "ip netns exec $client_ns taskset -c 1 $agentsim $args" >>"$commands"
	t0=$(cpu_ticks "$server_pid")
	read -r u0 s0 < <(cpu_split "$server_pid")
	c0=$(cpu_busy_ticks 0)
	c1=$(cpu_busy_ticks 1)
	w0=$(date +%s.%N)
	ip netns exec "$client_ns" taskset -c 1 timeout -s KILL $(( duration + 60 )) \
		"$agentsim" $args >"$run/sim.json" 2>"$run/sim.err" || log "$1 $2: agentsim exited with $?"
	t1=$(cpu_ticks "$server_pid" 2>/dev/null || echo "$t0")
	read -r u1 s1 < <(cpu_split "$server_pid" 2>/dev/null || echo "$u0 $s0")
	window=$(awk -v a="$w0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
	sed 's/^/    /' "$run/sim.err" >&2
	json=$(tail -1 "$run/sim.json")
	[ -n "$json" ] || json='{}'
	echo "$json" | jq -c --arg transport "$1" --arg scenario "$2" \
		--argjson cpu "$(awk -v a="$t0" -v b="$t1" -v hz="$hz" 'BEGIN { printf "%.2f", (b - a) / hz }')" \
		--argjson d0 "$(( $(cpu_busy_ticks 0) - c0 ))" --argjson d1 "$(( $(cpu_busy_ticks 1) - c1 ))" \
		--argjson hz "$hz" --argjson window "$window" \
		--argjson ut "$(( u1 - u0 ))" --argjson st "$(( s1 - s0 ))" \
		'. + {transport: $transport, scenario: $scenario, server_cpu_s: $cpu,
		      server_utime_s: ($ut / $hz), server_stime_s: ($st / $hz),
		      cpu0_busy_s: ($d0 / $hz), cpu1_busy_s: ($d1 / $hz), window_s: $window}' >>"$jsonl"
	log "$1 $2: $(tail -1 "$jsonl" | jq -c '{handshakes_per_s, uploads_per_s, mb_per_s, server_cpu_s, window_s, errors}')"
	kill -0 "$server_pid" 2>/dev/null || { log "beacond died during $1 $2"; tail -20 "$run/beacond-$1.log" >&2; return 1; }
	sleep 1
}

# --- run -------------------------------------------------------------------------

: >"$jsonl"
echo "perf/transports.sh --duration $duration" >"$commands"
for t in kernel dpdk; do
	log "$t: starting beacond"
	if "start_$t"; then
		log "$t: beacond pid $server_pid listening on 198.18.0.1:$port"
		for sc in full13 resume13 ka16k; do
			run_scenario "$t" "$sc" || break
		done
	else
		log "$t: beacond did not start"
	fi
	stop_server
	cp "$run/beacond-$t.log" "$out/transports-beacond-$t.log" 2>/dev/null || true
done

# --- report ----------------------------------------------------------------------

{
	echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), kernel $(uname -r)"
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), beacond commit $(git -C "$root" rev-parse --short HEAD)"
	echo
	echo "| scenario | transport | per s (wall) | per beacond CPU s | beacond CPU busy (user / sys) | CPU 0 / CPU 1 busy | p50 / p99 ms | errors |"
	echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
	jq -r '
		def f: if . == null then "—" elif . >= 100 then (. | round | tostring) else ((. * 10 | round) / 10 | tostring) end;
		(if .scenario == "ka16k" then "keep-alive 16 KiB uploads, MB" elif .scenario == "resume13" then "resumed TLS 1.3 handshakes (\((.resumed_fraction // 0) * 100 | round)% resumed)" else "full TLS 1.3 handshakes" end) as $name
		| (if .scenario == "ka16k" then .mb_per_s else .handshakes_per_s end) as $rate
		| (if .scenario == "ka16k" then .mb_per_s * .duration_s else .handshakes end) as $total
		| "| \($name) | \(.transport) | \($rate | f) | \(if (.server_cpu_s // 0) > 0 then ($total / .server_cpu_s | f) else "—" end) | \(((.server_cpu_s // 0) / .window_s * 100) | round)% (\((.server_utime_s // 0) / .window_s * 100 | round)% / \((.server_stime_s // 0) / .window_s * 100 | round)%) | \((.cpu0_busy_s / .window_s * 100) | round)% / \((.cpu1_busy_s / .window_s * 100) | round)% | \(.latency_ms.p50 // null | f) / \(.latency_ms.p99 // null | f) | \(if .errors then ([.errors[]] | add) else "—" end) |"
	' <(jq -c '. + {o: ({full13: 0, resume13: 1, ka16k: 2}[.scenario])}' "$jsonl" | jq -sc 'sort_by(.o, (.transport != "kernel")) | .[]')
	echo
	echo '```'
	cat "$commands"
	echo '```'
} >"$results"
cat "$results"
