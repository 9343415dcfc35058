#!/usr/bin/env bash
# perf/bench.sh: beacond, nginx and HAProxy through the same mutual-TLS
# scenarios, one after the other in one run, and perf/RESULTS.md from it.
#
#   perf/bench.sh [--long] [--servers "beacond nginx haproxy"]
#                 [--scenarios "full13 full12 resume13 ka4k ka16k ka64k ka1m
#                               burst rise idle crl0 crl1m"]
#                 [--duration S] [--idle-conns N] [--burst N] [--out FILE]
#                 [--repeat N]
#
# --repeat N (default 3): every scenario N times, the servers interleaved
# (run 1: beacond, nginx, HAProxy; run 2: the same; ...), and perf/tlsceiling
# (the TLS ceiling: wolfSSL server and client in memory, set up as beacond)
# at the start of each run, pinned to CPU 0 like the servers. The report
# gives each figure's median and range over the runs, and each ratio as the
# median and range of the ratios taken within a run: on a shared machine a
# rate moves by tens of percent between runs minutes apart. Every server's
# resumed fraction is printed for each run of resume13; a run in which a
# server resumed less than 80% of its handshakes is a measurement problem
# and is left out of the summary.
#
# ka4k/ka64k/ka1m: durable keep-alive uploads (beacond: with its fdatasync
# and group-commit counters; nginx: DAV PUT to disk, no fsync; HAProxy does
# not store and skips ka4k/ka64k). crl0/crl1m: full TLS 1.3 handshakes with
# an empty and with a 1,000,000-serial CRL for the agents' CA (made once by
# gen-crl.sh, cached in perf/out/crl). burst: N agents (5,000; --long
# 50,000) arriving within 10 s, open loop. rise: full handshakes open-loop
# at rising rates (p99 against offered rate). PNG plots go to perf/.
#
# Each server runs as an unprivileged process pinned to CPU 0 with one
# worker; agentsim runs pinned to CPU 1. Figures are per second of server
# CPU (utime + stime from /proc/PID/stat, all threads), so a server that the
# load generator cannot saturate is not flattered or penalised by idling.
# Default: ~10 s per scenario; --long: 60 s and 15,000 idle connections.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
servers="beacond nginx haproxy"
scenarios="full13 full12 resume13 ka4k ka16k ka64k ka1m burst rise idle crl0 crl1m"
duration=10
idle_conns=2000
burst=5000
rise_rates="200 500 1000 2000"
rise_duration=5
crl_serials=1000000
results="$root/perf/RESULTS.md"
concurrency=32
repeat=3
ceiling_seconds=2	# server CPU seconds per kind, per run
invocation="perf/bench.sh $*"

while [ $# -gt 0 ]; do
	case $1 in
	--long) duration=60; idle_conns=15000; burst=50000; rise_duration=20 ;;
	--servers) servers=$2; shift ;;
	--scenarios) scenarios=$2; shift ;;
	--duration) duration=$2; shift ;;
	--idle-conns) idle_conns=$2; shift ;;
	--burst) burst=$2; shift ;;
	--out) results=$2; shift ;;
	--repeat) repeat=$2; shift ;;
	-h|--help) sed -n '2,34p' "$0"; exit 0 ;;
	*) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

out="$root/perf/out"
mkdir -p "$out/logs"
run=$(mktemp -d /tmp/beacon-bench.XXXXXX)
chmod 755 "$run"
jsonl="$run/results.jsonl"
commands="$run/commands.txt"
: >"$jsonl"
: >"$commands"
server_pid=
server_variant=	# "", crl0 or crl1m: the configuration the server runs with
server_start_s=0

log() { echo "bench: $*" >&2; }

cleanup() {
	stop_server
	# server logs outlive the run: a failure is read after the fact
	mkdir -p "$out/logs"
	cp "$run"/*.log "$out/logs/" 2>/dev/null || true
	rm -rf "$run"
}
trap cleanup EXIT

# --- set-up -----------------------------------------------------------------

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

install_peers() {
	local need=()
	command -v nginx >/dev/null || need+=(nginx)
	command -v haproxy >/dev/null || need+=(haproxy)
	command -v gnuplot >/dev/null || need+=(gnuplot-nox)
	[ ${#need[@]} -eq 0 ] && return
	log "installing ${need[*]} from Debian"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends "${need[@]}" >"$run/apt.log" 2>&1 ||
		{ cat "$run/apt.log" >&2; exit 1; }
}

build() {
	cd "$root"
	[ -f build/build.ninja ] || meson setup build >"$run/meson.log"
	# beacond may fail to build while it is being worked on: the peers are
	# still measured, and the report says beacond is missing
	ninja -C build perf/agentsim perf/tlsceiling >"$run/ninja.log" 2>&1 ||
		{ cat "$run/ninja.log" >&2; exit 1; }
	ninja -C build beacond >>"$run/ninja.log" 2>&1 ||
		log "beacond did not build (see below); measuring the peers only"
	[ -x build/beacond ] || servers=${servers//beacond/}
	agentsim=$root/build/perf/agentsim
	tlsceiling=$root/build/perf/tlsceiling
}

# The demo PKI is kept in perf/out so the cached agent certificates stay
# valid between runs; the servers get a copy they can read unprivileged.
make_pki() {
	bash "$root/config/demo-pki.sh" "$out/pki" >/dev/null
	mkdir -p "$run/pki"
	cp "$out/pki"/{server.pem,server.key,agents-ca.pem,server-ca.pem,agent1.pem,agent1.key} "$run/pki/"
	cat "$run/pki/server.pem" "$run/pki/server.key" >"$run/pki/server-bundle.pem"
}

# CRLs for the agents' CA: an empty one and one with $crl_serials serials
# (about 15 s to make, 48 MB of PEM), kept in perf/out/crl and made again
# when the CA is newer or the CRL is 20 days old (nextUpdate is +30 days).
make_crls() {
	case " $scenarios " in *" crl"*) ;; *) return 0 ;; esac
	mkdir -p "$out/crl"
	local n f
	for n in 0 "$crl_serials"; do
		f="$out/crl/agents-$n.pem"
		if [ ! -s "$f" ] || [ "$out/pki/agents-ca.pem" -nt "$f" ] ||
			[ -n "$(find "$f" -mtime +20)" ]; then
			log "making a CRL with $n serials ($f)"
			bash "$root/perf/gen-crl.sh" "$out/pki/agents-ca.pem" \
				"$out/pki/agents-ca.key" "$n" "$f.tmp"
			mv "$f.tmp" "$f"
		fi
	done
	mkdir -p "$run/crl0" "$run/crl1m"
	cp "$out/crl/agents-0.pem" "$run/crl0/agents.pem"
	cp "$out/crl/agents-$crl_serials.pem" "$run/crl1m/agents.pem"
}

# Servers run as nobody when we are root: an internet-facing daemon would.
unprivileged() {
	if [ "$(id -u)" = 0 ]; then
		chown -R nobody:nogroup "$run"
		exec setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$@"
	fi
	exec "$@"
}

# --- servers ----------------------------------------------------------------

# The benchmarks' fixed ports are below 12000: the test suite draws its
# servers' ports from 12000 up (tests/integration/helpers.py), so a
# benchmark run beside the tests never holds a port a test was given.
port_for() {
	case $1 in beacond) echo 11443 ;; nginx) echo 11444 ;; haproxy) echo 11445 ;; esac
}

write_beacond_conf() { # PORT
	mkdir -p "$run/beacond-data" "$run/beacond-dl"
	cat >"$run/beacond.conf" <<-EOF
	[server]
	listen = 127.0.0.1:$1
	workers = 1
	data_dir = $run/beacond-data
	download_dir = $run/beacond-dl
	control_socket = $run/beacond.sock

	metrics = 127.0.0.1:$(( $1 + 10 ))

	[tls]
	cert = $run/pki/server.pem
	key = $run/pki/server.key
	issuers = $run/pki/agents-ca.pem
	crl_dir = ${server_variant:+$run/$server_variant}

	[limits]
	# the idle scenario holds up to 15,000; the default cap is exactly that
	max_connections = 19000

	[log]
	# as the peers: nginx runs with access_log off, HAProxy logs nothing
	access = no
	EOF
}

fill_template() { # TEMPLATE OUTPUT PORT CRLLINE
	sed -e "s|@CRL@|$4|g" -e "s|@RUN@|$run|g" -e "s|@PORT@|$3|g" "$1" >"$2"
}

server_command() { # SERVER PORT -> prints the command
	case $1 in
	beacond)
		write_beacond_conf "$2"
		echo "$root/build/beacond -c $run/beacond.conf" ;;
	nginx)
		mkdir -p "$run/nginx-data" "$run/nginx-body"
		fill_template "$root/perf/peers/nginx.conf.in" "$run/nginx.conf" "$2" \
			"${server_variant:+ssl_crl $run/$server_variant/agents.pem;}"
		echo "nginx -e $run/nginx-error.log -c $run/nginx.conf" ;;
	haproxy)
		fill_template "$root/perf/peers/haproxy.cfg.in" "$run/haproxy.cfg" "$2" \
			"${server_variant:+crl-file $run/$server_variant/agents.pem}"
		echo "haproxy -db -f $run/haproxy.cfg" ;;
	esac
}

wait_port() { # PORT PID (60 s: nginx and HAProxy parse a 48 MB CRL first)
	for _ in $(seq 600); do
		kill -0 "$2" 2>/dev/null || return 1
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# beacond says when it is ready (listeners, control socket, privileges):
# its ready line in the log, past the FROM lines of earlier runs. Its TCP
# port opens before its control socket, which beacond_stats reads.
wait_ready() { # LOG FROM PID
	for _ in $(seq 600); do
		tail -n +"$(($2 + 1))" "$1" | grep -q ": ready: listening on" && return 0
		kill -0 "$3" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

server_up() { # SERVER PORT PID LOG_FROM
	if [ "$1" = beacond ]; then
		wait_ready "$run/$1.log" "$4" "$3"
	else
		wait_port "$2" "$3"
	fi
}

start_server() { # SERVER [VARIANT]
	local port cmd t0
	server_variant=${2:-}
	port=$(port_for "$1")
	cmd=$(server_command "$1" "$port")
	echo "taskset -c 0 $cmd    # as nobody${server_variant:+, $server_variant}" >>"$commands"
	t0=$(date +%s.%N)
	local from=0
	[ -f "$run/$1.log" ] && from=$(wc -l <"$run/$1.log")
	( ulimit -n 20000; unprivileged taskset -c 0 $cmd ) >>"$run/$1.log" 2>&1 &
	server_pid=$!
	if server_up "$1" "$port" "$server_pid" "$from"; then
		server_start_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
	else
		log "$1 did not start listening on $port:"
		cat "$run/$1.log" >&2
		stop_server
		return 1
	fi
	log "$1${server_variant:+ ($server_variant)} listening on 127.0.0.1:$port (pid $server_pid) after ${server_start_s} s"
}

. "$root/perf/lib.sh" # stop_server

cpu_ticks() { # PID: utime + stime of every thread, in clock ticks
	sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

cpu_busy_ticks() { # CPU: ticks that core spent on anything but idle/iowait
	awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# System calls the server makes during a scenario: perf's raw_syscalls
# tracepoint on every thread of the server process, started disabled and
# enabled through its control fifo, so that the count begins only once perf
# acknowledges (no sleep standing for "attached"). Prints nothing without
# perf or tracepoints; a count is exact, not a sample, and does not move
# with the machine's load.
syscalls_start() { # PID
	syscall_perf=
	command -v perf >/dev/null || return 0
	rm -f "$run/sc.ctl" "$run/sc.ack" "$run/syscalls.txt"
	mkfifo "$run/sc.ctl" "$run/sc.ack" || return 0
	perf stat -x, -e raw_syscalls:sys_enter -p "$1" -D -1 \
		--control "fifo:$run/sc.ctl,$run/sc.ack" -o "$run/syscalls.txt" 2>/dev/null &
	syscall_perf=$!
	exec {syscall_ctl}>"$run/sc.ctl" {syscall_ack}<"$run/sc.ack"
	local ack=
	echo enable >&"$syscall_ctl"
	read -r -t 10 ack <&"$syscall_ack" || true
	if [ "$ack" != ack ]; then
		kill "$syscall_perf" 2>/dev/null
		wait "$syscall_perf" 2>/dev/null
		syscall_perf=
	fi
}

# Sets syscall_count (empty without a count). Not in a $(...): only this
# shell can wait for perf to write its count.
syscalls_stop() {
	syscall_count=
	[ -n "$syscall_perf" ] || return 0
	kill -INT "$syscall_perf" 2>/dev/null
	wait "$syscall_perf" 2>/dev/null || true
	exec {syscall_ctl}>&- {syscall_ack}<&-
	syscall_count=$(awk -F, '$3 == "raw_syscalls:sys_enter" {
		print ($1 ~ /^[0-9]+$/ ? $1 : 0) }' "$run/syscalls.txt")
}

rss_kib() {
	awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

# --- scenarios --------------------------------------------------------------

scenario_args() { # SCENARIO
	local common="--concurrency $concurrency --duration $duration --quiet"
	case $1 in
	full13) echo "--mode full --tls 1.3 --body-size 1k $common" ;;
	full12) echo "--mode full --tls 1.2 --body-size 1k $common" ;;
	resume13) echo "--mode resume --tls 1.3 --body-size 1k $common" ;;
	crl0|crl1m) echo "--mode full --tls 1.3 --body-size 1k $common" ;;
	ka4k) echo "--mode keepalive --tls 1.3 --body-size 4k $common" ;;
	ka16k) echo "--mode keepalive --tls 1.3 --body-size 16k $common" ;;
	ka64k) echo "--mode keepalive --tls 1.3 --body-size 64k $common" ;;
	ka1m) echo "--mode keepalive --tls 1.3 --body-size 1M $common" ;;
	# N agents arriving within 10 s, each with its own connection and full
	# handshake; up to 1,000 connections at once (beacond takes 1,024
	# handshakes in progress), later arrivals wait in agentsim's queue and
	# their latency counts from arrival
	burst) echo "--mode full --tls 1.3 --body-size 1k --concurrency 1000 --rate $(( burst / 10 )) --requests $burst --quiet" ;;
	rise*) echo "--mode full --tls 1.3 --body-size 1k --concurrency 256 --rate ${1#rise} --duration $rise_duration --quiet" ;;
	idle) echo "--mode idle --tls 1.3 --concurrency $idle_conns --duration 3 --quiet --ready-file $run/idle.ready" ;;
	esac
}

# How many agents (certificates) a scenario cycles through. Each agent's
# first connection is a full handshake (agentsim keeps its tickets in
# memory), so resume13 uses 100: with 1,000, a server doing 600 handshakes a
# second would resume less than 85% of them in 10 s and the figure would be
# mostly full handshakes (the run is flagged below 80% resumed).
agents_for() { # SCENARIO
	case $1 in resume*) echo 100 ;; *) echo 1000 ;; esac
}

# Samples the server's RSS once every idle connection is up.
sample_idle_rss() { # PID SIMPID -> prints KiB or nothing
	for _ in $(seq 1200); do
		if [ -e "$run/idle.ready" ]; then
			sleep 0.5
			rss_kib "$1"
			return
		fi
		kill -0 "$2" 2>/dev/null || return
		sleep 0.1
	done
}

# beacond's own counters (store commits, fdatasyncs, uploads committed,
# handshakes) around a scenario, from the control socket
beacond_stats() {
	[ -S "$run/beacond.sock" ] &&
		"$root/build/beaconctl" --socket "$run/beacond.sock" --json stats 2>/dev/null |
		jq -c '{store_commits, store_fdatasyncs, store_uploads_committed, uploads,
			handshakes_ok: .handshakes.ok, handshake_failures,
			revoked_serials, connections_refused}' 2>/dev/null || echo '{}'
}

# How long beacond takes to load its CRLs again (the 1,000,000-serial one in
# crl1m): wall time of "beaconctl reload crl" and beacond's CPU time for it.
time_crl_reload() { # -> JSON
	local t0 c0 w
	c0=$(cpu_ticks "$server_pid")
	t0=$(date +%s.%N)
	echo "$root/build/beaconctl --socket $run/beacond.sock reload crl" >>"$commands"
	if "$root/build/beaconctl" --socket "$run/beacond.sock" reload crl >"$run/reload.out" 2>&1; then
		w=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
		sleep 0.2
		jq -nc --argjson w "$w" --argjson c "$(( $(cpu_ticks "$server_pid") - c0 ))" \
			--argjson hz "$(getconf CLK_TCK)" --arg msg "$(cat "$run/reload.out")" \
			'{crl_reload_wall_s: $w, crl_reload_cpu_s: ($c / $hz), crl_reload_message: $msg}'
	else
		log "beacond: reload crl failed: $(cat "$run/reload.out")"
		echo '{}'
	fi
}

run_scenario() { # SERVER SCENARIO
	local server=$1 sc=$2 port args t0 t1 rss0 rss1= json c0 c1 d0 d1
	local st0='{}' st1='{}' extra='{}' guard w0 window calls
	port=$(port_for "$server")
	args="$(scenario_args "$sc") --certs $(agents_for "$sc") --ca-cert $out/pki/agents-ca.pem \
--ca-key $out/pki/agents-ca.key --cache $out/agents https://127.0.0.1:$port"
	echo "taskset -c 1 $agentsim $args" >>"$commands"
	rm -f "$run/idle.ready"
	if [ "$server" = beacond ]; then
		[ "$sc" = crl1m ] && extra=$(time_crl_reload)
		st0=$(beacond_stats)
	fi
	# a stuck run must not hold the whole benchmark
	guard=$(( duration + 60 ))
	[ "$sc" = burst ] && guard=$(( 120 + burst / 50 ))
	rss0=$(rss_kib "$server_pid")
	t0=$(cpu_ticks "$server_pid")
	c0=$(cpu_busy_ticks 0)
	c1=$(cpu_busy_ticks 1)
	syscalls_start "$server_pid"
	w0=$(date +%s.%N)
	taskset -c 1 timeout -s KILL "$guard" "$agentsim" $args >"$run/sim.json" 2>"$run/sim.err" &
	local sim=$!
	[ "$sc" = idle ] && rss1=$(sample_idle_rss "$server_pid" "$sim")
	wait "$sim" || log "$server $sc: agentsim exited with $?"
	t1=$(cpu_ticks "$server_pid" 2>/dev/null || echo "$t0")
	syscalls_stop
	calls=$syscall_count
	d0=$(( $(cpu_busy_ticks 0) - c0 ))
	d1=$(( $(cpu_busy_ticks 1) - c1 ))
	window=$(awk -v a="$w0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
	[ "$server" = beacond ] && st1=$(beacond_stats)
	sed 's/^/    /' "$run/sim.err" >&2
	json=$(tail -1 "$run/sim.json")
	[ -n "$json" ] || json='{}'
	echo "$json" | jq -c --arg server "$server" --arg scenario "$sc" \
		--argjson cpu "$(awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN { printf "%.2f", (b - a) / hz }')" \
		--argjson rss0 "${rss0:-0}" --argjson rss1 "${rss1:-0}" \
		--argjson d0 "$d0" --argjson d1 "$d1" --argjson hz "$(getconf CLK_TCK)" \
		--argjson st0 "$st0" --argjson st1 "$st1" --argjson extra "$extra" \
		--arg variant "$server_variant" --argjson start "$server_start_s" \
		--argjson window "$window" --argjson rep "$rep" --argjson calls "${calls:-null}" \
		'. + {server: $server, scenario: $scenario, rep: $rep, server_cpu_s: $cpu,
		      server_rss0_kib: $rss0, server_rss1_kib: $rss1,
		      cpu0_busy_s: ($d0 / $hz), cpu1_busy_s: ($d1 / $hz),
		      variant: $variant, server_start_s: $start,
		      window_s: $window, server_syscalls: $calls}
		  + (if $st1 == {} or $st0 == {} then {} else
		     {beacond: ($st1 | with_entries(.value = (.value // 0) - ($st0[.key] // 0)))} end)
		  + $extra' >>"$jsonl"
	# a run whose server died is kept but marked, not silently averaged
	log "$server $sc: $(tail -1 "$jsonl" | jq -c '{handshakes_per_s, uploads_per_s, mb_per_s, server_cpu_s, server_syscalls, errors, p99: .latency_ms.p99, beacond}')"
	# nginx keeps what it is sent: remove it and write back what is dirty
	# now, so one scenario's disk work does not land in the next one's
	# (after a pause: nginx finishes uploads the client abandoned at the end)
	sleep 1
	rm -rf "$run/nginx-data/ManageSoftRL" || true
	sync
	if ! kill -0 "$server_pid" 2>/dev/null; then
		log "$server died during $sc:"
		tail -20 "$run/$server.log" >&2
		cp "$run/$server.log" "$out/logs/$server-$sc-died.log" 2>/dev/null || true
		jq -c '. + {server_died: true}' "$jsonl" | tail -1 >"$run/last.json"
		sed -i '$d' "$jsonl"
		cat "$run/last.json" >>"$jsonl"
		return 1
	fi
}

# A server that dies (or is killed by someone else on a shared machine) is
# reported, started again and measured on the remaining scenarios.
# The CRL scenarios run on a server started with that CRL; the others on
# one without any.
variant_for() { # SCENARIO
	case $1 in crl0|crl1m) echo "$1" ;; *) echo "" ;; esac
}

run_server() { # SERVER
	local list=() sc v
	for sc in $scenarios; do
		case $sc in
		rise) for r in $rise_rates; do list+=("rise$r"); done ;;
		# HAProxy stores nothing: it is in the durable-upload table as such
		ka4k|ka64k) [ "$1" = haproxy ] || list+=("$sc") ;;
		*) list+=("$sc") ;;
		esac
	done
	for sc in "${list[@]}"; do
		v=$(variant_for "$sc")
		# idle starts on a fresh server: one that ran the other scenarios
		# has freed heap to place the idle connections in, and its RSS
		# would not grow with them.
		if [ -z "$server_pid" ] || [ "$v" != "$server_variant" ] || [ "$sc" = idle ]; then
			stop_server
			sleep 1
			start_server "$1" "$v" || continue
		fi
		if ! run_scenario "$1" "$sc"; then
			wait "$server_pid" 2>/dev/null || true
			server_pid=
			echo "$1 stopped during $sc (see perf/out/logs); started again" >>"$run/incidents.txt"
		fi
		sleep 1	# let TIME_WAIT and server timers settle
	done
	stop_server
}

# The TLS ceiling of this run: tlsceiling on the servers' core, as they
# run, with the same certificates (agent1 of the demo PKI: P-256 from the
# agents' CA, as agentsim's agents). One JSON line per kind.
run_ceiling() {
	local args="--server-cert $run/pki/server.pem --server-key $run/pki/server.key \
--ca $run/pki/agents-ca.pem --client-cert $run/pki/agent1.pem --client-key $run/pki/agent1.key \
--seconds $ceiling_seconds --json"
	echo "taskset -c 0 $tlsceiling $args" >>"$commands"
	if ! taskset -c 0 "$tlsceiling" $args >"$run/ceiling.json" 2>"$run/ceiling.err"; then
		log "tlsceiling failed: $(cat "$run/ceiling.err")"
		echo "tlsceiling failed in run $rep: $(cat "$run/ceiling.err")" >>"$run/incidents.txt"
		return 0
	fi
	jq -c --argjson rep "$rep" '. + {rep: $rep}' "$run/ceiling.json" >>"$jsonl"
	log "ceiling, run $rep: $(jq -r '"\(.scenario) \(.handshakes_per_server_cpu_s)"' "$run/ceiling.json" | paste -sd' ' -)"
}

# --- report -----------------------------------------------------------------

machine() {
	echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)"
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- versions: $("$root/build/beacond" --version 2>/dev/null | head -1 || echo "beacond $(git -C "$root" rev-parse --short HEAD)"), $(nginx -v 2>&1), $(haproxy -v | head -1 | cut -d' ' -f1-3)"
	echo "- beacond commit: $(git -C "$root" rev-parse --short HEAD)"
}

write_report() {
	{
		echo "# beacond vs nginx vs HAProxy: mutual-TLS benchmarks"
		echo
		echo "Written by \`perf/bench.sh$( [ "$duration" = 60 ] && echo ' --long')\`, $repeat runs with the servers interleaved. Each server: one worker, pinned to CPU 0,"
		echo "unprivileged; load: \`agentsim\` pinned to CPU 1, $concurrency connections, one"
		echo "certificate per agent (1,000 agents, EC P-256), no server-certificate check"
		echo "on the client. Figures are per second of *server* CPU time (utime + stime,"
		echo "all threads, from /proc/PID/stat). beacond fsyncs each upload before its 201;"
		echo "nginx writes to disk without fsync; HAProxy stores nothing."
		echo
		echo "The machine may be shared with other work during a run. \"other load\" is"
		echo "the busy share of CPU 0 not spent by the server and of CPU 1 not spent"
		echo "by agentsim (loopback softirq included): where it is high, wall-clock"
		echo "rates and latencies are not comparable; figures per server CPU second"
		echo "hold up better. \"server CPU busy\" below 100% means the server was not"
		echo "the bottleneck (beacond waits for fdatasync before each 201)."
		echo
		machine
		echo
		python3 "$root/perf/report.py" "$jsonl"
		# beside the report, whose links are relative: a run with --out
		# elsewhere leaves perf/'s committed plots alone
		if python3 "$root/perf/plot.py" "$jsonl" "$(dirname "$(realpath "$results")")" >"$run/plot.log" 2>&1; then
			echo "## Plots"
			echo
			echo "![handshakes per server CPU second by mode](plot-handshakes.png)"
			echo
			echo "![p99 latency of full handshakes against offered rate](plot-latency.png)"
			echo
			echo "![server memory per idle connection](plot-idle-memory.png)"
			echo
		else
			log "plots failed:"; cat "$run/plot.log" >&2
		fi
		if [ -s "$run/incidents.txt" ]; then
			echo "## Incidents"
			echo
			sed 's/^/- /' "$run/incidents.txt"
			echo
		fi
		echo
		echo "## Commands"
		echo
		echo '```'
		echo "$invocation"
		cat "$commands"
		echo '```'
	} >"$results"
	cp "$jsonl" "$out/results.jsonl"
	log "wrote $results"
}

install_peers
build
make_pki
make_crls
# agent certificates made before any server runs, so no scenario pays for them
"$agentsim" --certs 1000 --ca-cert "$out/pki/agents-ca.pem" \
	--ca-key "$out/pki/agents-ca.key" --cache "$out/agents" --requests 1 \
	--quiet --timeout 1 https://127.0.0.1:1 >/dev/null 2>&1 || true
for rep in $(seq "$repeat"); do
	log "run $rep of $repeat"
	run_ceiling
	for s in $servers; do
		run_server "$s"
	done
done
write_report
python3 "$root/perf/report.py" --summary "$out/results.jsonl"
