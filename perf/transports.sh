#!/usr/bin/env bash
# perf/transports.sh: the whole service (TLS, HTTP, store) through the kernel
# transport against the DPDK transport, same agentsim load (issue 5 item 6).
#
#   perf/transports.sh [--duration S] [--out FILE]     (root: namespaces, tap)
#   perf/transports.sh --idle N [--dpdk-mem MB] [--out FILE]
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
# --idle N (instead of the scenarios above; issue 6 item 4): N idle mutual-TLS
# connections (TLS 1.3, full handshake, then silence) held open to beacond
# over DPDK, and min(N, 15000) over both transports for a comparison at the
# same N (the kernel transport needs a descriptor per connection and this
# machine caps a process at 20,000). Reports beacond's VmRSS growth per held
# connection (/proc/PID/status before the first connection and once all are
# up) and how many were held, from beacond's own count (beaconctl stats),
# the client side's ESTABLISHED sockets (ss) and agentsim's. agentsim is
# one process per 15,000 connections (open files again), each from its own
# source address 198.18.0.2, .3, ... (IP_BIND_ADDRESS_NO_PORT), at most two
# processes to an address so 30,000 fit in its 64,511 ephemeral ports. The
# benchmark's beacond.conf raises [limits] max_connections to N + 5000 and
# idle_timeout to 1h (the ramp takes minutes), as a user would; the client
# namespace gets ip_local_port_range 1024-65535. --dpdk-mem gives the EAL's
# -m (default 256). Writes perf/out/transports-idle.md / .jsonl.
#
# A tap makes the kernel do the packet work on the other side, so the DPDK
# figures say nothing about a real NIC; DPDK's polling worker burns its core
# at 100% by design, so for DPDK "per beacond CPU second" is per wall second.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
duration=10
results=
idle=
dpdk_mem=256
while [ $# -gt 0 ]; do
	case $1 in
	--duration) duration=$2; shift 2 ;;
	--out) results=$2; shift 2 ;;
	--idle) idle=$2; shift 2 ;;
	--dpdk-mem) dpdk_mem=$2; shift 2 ;;
	-h|--help) sed -n '2,42p' "$0"; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "perf/transports.sh: needs root (namespaces, tap)" >&2; exit 1; }

out=$root/perf/out
run=$(mktemp -d /tmp/beacond-transports.XXXXXX)
jsonl=$out/transports${idle:+-idle}.jsonl
results=${results:-$out/transports${idle:+-idle}.md}
commands=$run/commands.txt
tag=$(( $$ % 100000 ))
ns_srv=bpts$tag ns_cli=bptc$tag ns_dpdk=bptd$tag
veth_s=bpvs$tag veth_c=bpvc$tag tap=bpt$tag
port=11443
hz=$(getconf CLK_TCK)
server_pid=
sim_pids=()
: >"$commands"

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

drop_netns() {
	ip netns del "$ns_srv" 2>/dev/null || true
	ip netns del "$ns_cli" 2>/dev/null || true
	ip netns del "$ns_dpdk" 2>/dev/null || true
	rm -rf "/var/run/dpdk/$ns_dpdk"
}

cleanup() {
	stop_sims
	stop_server
	drop_netns
	rm -rf "$run"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

. "$root/perf/lib.sh" # stop_server, wait_ready, beacond_conf, bench_pki

stop_sims() { # SIGTERM: each agentsim prints its result and closes
	local p
	for p in "${sim_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${sim_pids[@]}"; do
		for _ in $(seq 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	sim_pids=()
}

cpu_split() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12, $13 }'; }
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
cpu_busy_ticks() { awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# --- build, PKI, agent certificates ------------------------------------------

cd "$root"
ninja -C build beacond perf/agentsim >"$run/ninja.log" 2>&1 || { cat "$run/ninja.log" >&2; exit 1; }
agentsim=$root/build/perf/agentsim
bench_pki "$agentsim"

write_conf() { # BACKEND [MAX_CONNECTIONS]: the second for --idle
	rm -rf "$run/data" "$run/dl"
	mkdir -p "$run/data" "$run/dl"
	beacond_conf "$1" "$( [ "$1" = dpdk ] && echo 0.0.0.0 || echo 198.18.0.1 ):$port" \
		>"$run/beacond-$1.conf"
	if [ -n "${2:-}" ]; then
		cat >>"$run/beacond-$1.conf" <<-EOF

		[limits]
		max_connections = $2
		idle_timeout = 1h
		EOF
	fi
	if [ "$1" = dpdk ]; then
		cat >>"$run/beacond-$1.conf" <<-EOF

		[dpdk]
		eal_args = --no-huge -m $dpdk_mem --no-pci --vdev=net_tap0,iface=$tap -l 0 --file-prefix $ns_dpdk --log-level=warning
		port = 0
		address = 198.18.0.1/15
		mbufs = 16383
		EOF
	fi
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

start_kernel() { # [MAX_CONNECTIONS] -> sets server_pid, client_ns
	ip netns add "$ns_srv"
	ip netns add "$ns_cli"
	ip link add "$veth_s" netns "$ns_srv" type veth peer name "$veth_c" netns "$ns_cli"
	ip -n "$ns_srv" addr add 198.18.0.1/15 dev "$veth_s"
	ip -n "$ns_cli" addr add 198.18.0.2/15 dev "$veth_c"
	local ns
	for ns in "$ns_srv" "$ns_cli"; do ip -n "$ns" link set lo up; done
	ip -n "$ns_srv" link set "$veth_s" up
	ip -n "$ns_cli" link set "$veth_c" up
	write_conf kernel "${1:-}"
	local cmd="ip netns exec $ns_srv taskset -c 0 $root/build/beacond -c $run/beacond-kernel.conf"
	echo "$cmd" >>"$commands"
	( ulimit -n 20000; exec $cmd ) >"$run/beacond-kernel.log" 2>&1 &
	server_pid=$!
	client_ns=$ns_cli client_dev=$veth_c
	wait_ready "$run/beacond-kernel.log" "$server_pid" && wait_tcp "$ns_cli" ||
		{ cat "$run/beacond-kernel.log" >&2; return 1; }
}

start_dpdk() { # [MAX_CONNECTIONS]
	ip netns add "$ns_dpdk"
	write_conf dpdk "${1:-}"
	local cmd="ip netns exec $ns_dpdk taskset -c 0 $root/build/beacond -c $run/beacond-dpdk.conf"
	echo "$cmd" >>"$commands"
	( ulimit -n 20000; exec $cmd ) >"$run/beacond-dpdk.log" 2>&1 &
	server_pid=$!
	client_ns=$ns_dpdk client_dev=$tap
	wait_ready "$run/beacond-dpdk.log" "$server_pid" || { cat "$run/beacond-dpdk.log" >&2; return 1; }
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


# --- idle connections (--idle N) -------------------------------------------------

per_sim=${IDLE_PER_SIM:-15000}  # connections per agentsim: under its 20,000 open files
kernel_max=15000  # the kernel transport: a descriptor each, 20,000 a process
ramp_limit=480  # seconds for every connection to come up before measuring anyway

rss_json() { # PID -> {"VmRSS": KiB, "RssAnon": KiB, "RssFile": KiB, "RssShmem": KiB}
	awk '/^(VmRSS|RssAnon|RssFile|RssShmem):/ { sub(":", "", $1); printf "%s\"%s\":%s", n++ ? "," : "{", $1, $2 }
		END { print "}" }' "/proc/$1/status"
}

beacond_conns() { # -> beacond's own connection counters, JSON
	"$root/build/beaconctl" --socket "$run/beacond.sock" --json stats 2>/dev/null |
		jq -c '{connections_open, connections_accepted, connections_refused,
			handshakes_ok: .handshakes.ok, handshake_failures, timeouts}' 2>/dev/null ||
		echo '{}'
}

established() { # client side: ESTABLISHED sockets to beacond
	ip netns exec "$client_ns" ss -Htn state established "( dport = :$port )" | wc -l
}

sims_up() { # -> 0 once every agentsim has all its connections up (or has exited)
	local i
	for i in "${!sim_pids[@]}"; do
		[ -e "$run/idle.$i.ready" ] || ! kill -0 "${sim_pids[$i]}" 2>/dev/null || return 1
	done
}

idle_run() { # TRANSPORT N
	local t=$1 n=$2 nsims naddr i c left src args rss0 rss1 rss2 st1 st2 est1 est2 w0 ramp sims
	log "$t idle $n: starting beacond"
	if ! "start_$t" $(( n + 5000 )); then
		log "$t: beacond did not start"
		stop_server
		drop_netns
		return 1
	fi
	log "$t: beacond pid $server_pid listening on 198.18.0.1:$port"
	nsims=$(( (n + per_sim - 1) / per_sim ))
	naddr=$(( (nsims + 1) / 2 ))
	ip netns exec "$client_ns" sysctl -qw net.ipv4.ip_local_port_range="1024 65535"
	for i in $(seq 2 "$naddr"); do
		ip -n "$client_ns" addr add "198.18.0.$(( i + 1 ))/15" dev "$client_dev"
	done
	sleep 1
	rss0=$(rss_json "$server_pid")
	rm -f "$run"/idle.*
	left=$n
	w0=$(date +%s.%N)
	for i in $(seq 0 $(( nsims - 1 ))); do
		c=$(( left / (nsims - i) ))
		left=$(( left - c ))
		src=198.18.0.$(( 2 + i / 2 ))
		args="--mode idle --tls 1.3 --concurrency $c --duration 3600 --timeout 30 --quiet \
--ready-file $run/idle.$i.ready --source $src --certs 1000 --ca-cert $out/pki/agents-ca.pem \
--ca-key $out/pki/agents-ca.key --cache $out/agents https://198.18.0.1:$port"
		echo "(ulimit -n 20000; ip netns exec $client_ns taskset -c 1 $agentsim $args) &" >>"$commands"
		( ulimit -n 20000; exec ip netns exec "$client_ns" taskset -c 1 "$agentsim" $args ) \
			>"$run/idle.$i.json" 2>"$run/idle.$i.err" &
		sim_pids+=($!)
	done
	for i in $(seq $(( ramp_limit * 10 ))); do
		sims_up && break
		kill -0 "$server_pid" 2>/dev/null || break
		(( i % 100 )) || log "$t idle $n: $(beacond_conns | jq -r '"\(.connections_open) open, \(.handshakes_ok) handshakes"') after $(( i / 10 )) s"
		sleep 0.1
	done
	ramp=$(awk -v a="$w0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
	sims_up || log "$t idle $n: not all up after $ramp s; measuring what is held"
	if ! kill -0 "$server_pid" 2>/dev/null; then
		log "beacond died during $t idle $n"
		tail -20 "$run/beacond-$t.log" >&2
		stop_sims
		server_pid=
		drop_netns
		return 1
	fi
	sleep 2
	rss1=$(rss_json "$server_pid") st1=$(beacond_conns) est1=$(established)
	log "$t idle $n: all up in $ramp s: beacond $(echo "$st1" | jq -c .), client ESTABLISHED $est1, VmRSS $(echo "$rss0" | jq .VmRSS) -> $(echo "$rss1" | jq .VmRSS) KiB"
	# held, not merely opened: the same count 10 s later
	sleep 10
	rss2=$(rss_json "$server_pid") st2=$(beacond_conns) est2=$(established)
	stop_sims
	sims=$(for i in $(seq 0 $(( nsims - 1 ))); do tail -1 "$run/idle.$i.json"; done | jq -sc '
		{processes: length, handshakes: (map(.handshakes) | add),
		 connections_open: (map(.connections_open) | add),
		 errors: (map(.errors) | reduce .[] as $e ({}; . as $a | $e | with_entries(.value += ($a[.key] // 0)))),
		 handshake_p50_ms: (map(.latency_ms.p50) | max)}')
	for i in $(seq 0 $(( nsims - 1 ))); do sed "s/^/    [agentsim $i] /" "$run/idle.$i.err" >&2; done
	jq -nc --arg transport "$t" --argjson n "$n" --argjson sources "$naddr" --argjson ramp "$ramp" \
		--argjson rss0 "$rss0" --argjson rss1 "$rss1" --argjson rss2 "$rss2" \
		--argjson st1 "$st1" --argjson st2 "$st2" --argjson est1 "$est1" --argjson est2 "$est2" \
		--argjson sims "$sims" --arg eal "$( [ "$t" = dpdk ] && echo "-m $dpdk_mem" )" '
		($st1.connections_open // 0) as $held
		| {transport: $transport, n: $n, eal_mem: $eal, source_addresses: $sources, ramp_s: $ramp,
		   held_beacond: $held, held_beacond_10s_later: $st2.connections_open,
		   held_client_established: $est1, held_client_established_10s_later: $est2,
		   agentsim: $sims, beacond: $st2, rss_before_kib: $rss0, rss_held_kib: $rss1, rss_10s_later_kib: $rss2,
		   kib_per_conn: (if $held > 0 then (($rss1.VmRSS - $rss0.VmRSS) / $held * 100 | round) / 100 else null end),
		   anon_kib_per_conn: (if $held > 0 then (($rss1.RssAnon - $rss0.RssAnon) / $held * 100 | round) / 100 else null end)}' >>"$jsonl"
	log "$t idle $n: $(tail -1 "$jsonl" | jq -c '{held_beacond, held_client_established, kib_per_conn, anon_kib_per_conn}')"
	kill -0 "$server_pid" 2>/dev/null || log "beacond died during $t idle $n"
	stop_server
	cp "$run/beacond-$t.log" "$out/transports-idle-beacond-$t-$n.log" 2>/dev/null || true
	drop_netns
}

idle_report() {
	echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $(uname -r)"
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'), beacond commit $(git -C "$root" rev-parse --short HEAD)"
	echo
	echo "| transport | asked | held: beacond / client ESTABLISHED (10 s later) | ramp s | beacond VmRSS before -> held, MiB | KiB per connection (VmRSS) | RssAnon KiB per connection | agentsim errors |"
	echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
	jq -r '
		def mib: (. / 1024 * 10 | round) / 10;
		"| \(.transport)\(if .eal_mem != "" then " (EAL \(.eal_mem))" else "" end) | \(.n) | \(.held_beacond) / \(.held_client_established) (\(.held_beacond_10s_later) / \(.held_client_established_10s_later)) | \(.ramp_s) | \(.rss_before_kib.VmRSS | mib) -> \(.rss_held_kib.VmRSS | mib) | \(.kib_per_conn) | \(.anon_kib_per_conn) | \(.agentsim.errors | to_entries | map(select(.value > 0) | "\(.key) \(.value)") | if length == 0 then "0" else join(", ") end) |"
	' "$jsonl"
	echo
	echo '```'
	cat "$commands"
	echo '```'
}

# --- run -------------------------------------------------------------------------

if [ -n "$idle" ]; then
	: >"$jsonl"
	echo "perf/transports.sh --idle $idle --dpdk-mem $dpdk_mem" >"$commands"
	small=$(( idle < kernel_max ? idle : kernel_max ))
	idle_run kernel "$small" || true
	idle_run dpdk "$small" || true
	[ "$idle" -le "$small" ] || idle_run dpdk "$idle" || true
	idle_report >"$results"
	cat "$results"
	exit 0
fi

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
