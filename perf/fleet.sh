#!/usr/bin/env bash
# perf/fleet.sh: a fleet of beacond behind HAProxy, with the drain into NATS
# JetStream on and off (issue 16 item 9).
#
#   perf/fleet.sh [--repeat N] [--sizes "1 2 3"] [--duration S]
#                 [--mode full|resume|keepalive] [--concurrency C]
#                 [--certs N] [--body-size SIZE] [--out FILE]
#
# On this machine: 1 to 3 beacond (one worker each, PROXY protocol v2 from
# 127.0.0.1, one shared ticket_key_file: config/fleet-beacond.conf's keys)
# behind HAProxy (config/fleet-haproxy.cfg: mode tcp, send-proxy-v2, round
# robin), one nats-server with JetStream, and agentsim with --certs agents
# (default 100,000; their certificates are cached in perf/out/agents).
# For every --repeat and fleet size, on a fresh fleet each time:
#   off   closed loop, C connections (default 64), S seconds (default 10),
#         the drain off: the fleet's ingest capacity (uploads/s answered
#         201 through HAProxy);
#   on    the same with [drain] nats set: ingest capacity with the drain,
#         the drain's rate during the load (uploads acknowledged by
#         JetStream between the first and last samples within it) and overall (until the lag is 0), and the lag
#         (uploads, oldest undrained age) sampled every 0.5 s during and
#         after;
#   at80  on the "on" fleet once it caught up: open loop (agentsim --rate,
#         Poisson arrivals) at 0.8 x this repeat's "off" capacity for S
#         seconds, and the lag then: is its oldest age under 5 s?
# "off" and "on" alternate in order from one repeat to the next (off, on,
# at80; then on, at80, off), so a drift of the machine's load does not
# favour one. The lag and the drain's counts are each beacon's own
# (beaconctl --json status: the figures of /metrics'
# beacond_drain_uploads_total{result="acknowledged"} and
# beacond_drain_lag_*), summed over the fleet (the oldest age: the
# fleet's maximum).
#
# Besides uploads per wall second, each step counts the CPU time the
# fleet's processes (beacons, HAProxy, nats-server; /proc/PID/stat) used
# during the load: uploads per fleet CPU second, which other work on a
# shared machine disturbs far less, and the drain's cost in it; and the
# same for the beacons alone (nats-server's own work, which a real fleet
# runs on other machines, left out).
# Nothing is pinned: the beacons, HAProxy, nats-server and agentsim share
# the machine's CPUs, as they would not in a real fleet. JSON lines go to
# perf/out/fleet.jsonl, the table (median and range over the repeats) to
# --out (default perf/out/fleet.md) and standard output.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
repeat=1
sizes="1 2 3"
duration=10
mode=full
concurrency=64
certs=100000
body=1k
result=$root/perf/out/fleet.md
invocation="perf/fleet.sh $*"

while [ $# -gt 0 ]; do
	case $1 in
	--repeat) repeat=$2; shift ;;
	--sizes) sizes=$2; shift ;;
	--duration) duration=$2; shift ;;
	--mode) mode=$2; shift ;;
	--concurrency) concurrency=$2; shift ;;
	--certs) certs=$2; shift ;;
	--body-size) body=$2; shift ;;
	--out) result=$2; shift ;;
	-h|--help) sed -n '2,44p' "$0"; exit 0 ;;
	*) echo "fleet.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

out=$root/perf/out
mkdir -p "$out"
jsonl=$out/fleet.jsonl
run=$(mktemp -d /tmp/beacon-fleet.XXXXXX)
base_port=$((19000 + RANDOM % 500 * 8))
nats_port=$((base_port + 5))
nats_http=$((base_port + 6))
lb_port=$((base_port + 7))
beacon_pids=()
haproxy_pid=
nats_pid=
sampler_pid=

log() { echo "fleet: $(date -u +%T) $*" >&2; }

for tool in haproxy nats-server jq python3; do
	command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] ||
		{ echo "fleet.sh: $tool is missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
NATS_SERVER=$(command -v nats-server || echo /usr/sbin/nats-server)

stop_pid() { # PID: SIGTERM, SIGKILL after 10 s
	[ -n "$1" ] || return 0
	kill "$1" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	kill -9 "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
}

stop_fleet() {
	stop_sampler
	stop_pid "$haproxy_pid"
	haproxy_pid=
	for p in "${beacon_pids[@]}"; do stop_pid "$p"; done
	beacon_pids=()
}

cleanup() {
	stop_fleet
	stop_pid "$nats_pid"
	mkdir -p "$out/fleet-logs"
	cp "$run"/*.log "$out/fleet-logs/" 2>/dev/null || true
	rm -rf "$run"
}
trap cleanup EXIT

# --- set-up -------------------------------------------------------------------

cd "$root"
[ -f build/build.ninja ] || meson setup build >/dev/null
ninja -C build beacond beaconctl perf/agentsim >"$run/ninja.log" 2>&1 ||
	{ cat "$run/ninja.log" >&2; exit 1; }
agentsim=$root/build/perf/agentsim
beaconctl=$root/build/beaconctl
bash "$root/config/demo-pki.sh" "$out/pki" >/dev/null
mkdir -p "$run/pki"
cp "$out/pki"/{server.pem,server.key,agents-ca.pem} "$run/pki/"
sim_common=(--mode "$mode" --tls 1.3 --body-size "$body" --certs "$certs"
	--ca-cert "$out/pki/agents-ca.pem" --ca-key "$out/pki/agents-ca.key"
	--cache "$out/agents")
# The agents' certificates, made (and timed) before anything runs.
t0=$(date +%s.%N)
"$agentsim" "${sim_common[@]}" --requests 1 --timeout 1 https://127.0.0.1:1 \
	>/dev/null 2>"$run/certs.log" || true
grep -h "made .* agent certificates" "$run/certs.log" >&2 ||
	log "$certs agent certificates from the cache ($(echo "$(date +%s.%N) - $t0" | bc) s)"

head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$run/tickets.keys"
echo >>"$run/tickets.keys"
chmod 600 "$run/tickets.keys"
mkdir -p "$run/crl"

cat >"$run/nats.conf" <<EOF
listen: 127.0.0.1:$nats_port
http: 127.0.0.1:$nats_http
jetstream { store_dir: "$run/js" }
EOF
"$NATS_SERVER" -c "$run/nats.conf" >"$run/nats.log" 2>&1 &
nats_pid=$!
for _ in $(seq 300); do
	curl -fs "http://127.0.0.1:$nats_http/healthz?js-enabled-only=true" >/dev/null && break
	sleep 0.1
done
curl -fs "http://127.0.0.1:$nats_http/healthz?js-enabled-only=true" >/dev/null ||
	{ log "nats-server did not start"; cat "$run/nats.log" >&2; exit 1; }

# --- the fleet ----------------------------------------------------------------

beacon_conf() { # I DRAIN_ID ("" = drain off)
	local i=$1 port=$((base_port + $1))
	cat <<-EOF
	[server]
	listen = 127.0.0.1:$port
	workers = 1
	data_dir = $run/b$i/data
	download_dir = $run/b$i/dl
	control_socket = $run/b$i/beacond.sock
	proxy_protocol = v2
	proxy_from = 127.0.0.1/32
	watch = no

	[tls]
	cert = $run/pki/server.pem
	key = $run/pki/server.key
	issuers = $run/pki/agents-ca.pem
	ticket_key_file = $run/tickets.keys
	crl_dir = $run/crl

	[log]
	access = no
	EOF
	if [ -n "$2" ]; then
		printf '\n[drain]\nnats = nats://127.0.0.1:%s\nbeacon_id = %s\n' "$nats_port" "$2"
	fi
}

# config/fleet-haproxy.cfg with this run's addresses, n server lines.
haproxy_conf() { # N
	awk -v bind="127.0.0.1:$lb_port" -v sock="$run/haproxy.sock" -v n="$1" \
		-v base="$base_port" '
		/^[ \t]*server[ \t]/ { s++; if (s > n) next;
			sub(/[^ \t]+:443/, "127.0.0.1:" base + s) }
		/^[ \t]*bind[ \t]/ { sub(/bind[ \t]+[^ \t]+/, "bind " bind) }
		/^[ \t]*stats[ \t]+socket[ \t]/ { sub(/socket[ \t]+[^ \t]+/, "socket " sock) }
		{ print }' "$root/config/fleet-haproxy.cfg"
}

haproxy_all_up() { # N
	python3 - "$run/haproxy.sock" "$1" <<-'EOF'
	import csv, io, socket, sys
	s = socket.socket(socket.AF_UNIX)
	try:
	    s.connect(sys.argv[1])
	except OSError:
	    sys.exit(1)
	s.sendall(b"show stat\n")
	buf = b""
	while (d := s.recv(65536)):
	    buf += d
	rows = csv.DictReader(io.StringIO(buf.decode().lstrip("# ")))
	up = [r for r in rows if r["svname"].startswith("beacon") and r["status"] == "UP"]
	sys.exit(0 if len(up) == int(sys.argv[2]) else 1)
	EOF
}

start_fleet() { # N TAG ("" = drain off)
	local n=$1 tag=$2
	for i in $(seq "$n"); do
		rm -rf "$run/b$i"
		mkdir -p "$run/b$i/data" "$run/b$i/dl"
		beacon_conf "$i" "${tag:+${tag}b$i}" >"$run/b$i/beacond.conf"
		"$root/build/beacond" -c "$run/b$i/beacond.conf" >"$run/beacon$i.log" 2>&1 &
		beacon_pids+=($!)
	done
	for i in $(seq "$n"); do
		for _ in $(seq 300); do
			grep -q ": ready: listening on" "$run/beacon$i.log" && break
			sleep 0.1
		done
		grep -q ": ready: listening on" "$run/beacon$i.log" ||
			{ log "beacon $i did not start:"; cat "$run/beacon$i.log" >&2; exit 1; }
	done
	haproxy_conf "$n" >"$run/haproxy.cfg"
	"$HAPROXY" -db -f "$run/haproxy.cfg" >"$run/haproxy.log" 2>&1 &
	haproxy_pid=$!
	for _ in $(seq 300); do
		haproxy_all_up "$n" && return 0
		sleep 0.1
	done
	log "haproxy did not bring $n beacons up:"; cat "$run/haproxy.log" >&2
	exit 1
}

# The fleet's drain: "acked lag_uploads oldest_s" summed (oldest: max).
drain_now() { # N
	local i
	for i in $(seq "$1"); do
		"$beaconctl" --socket "$run/b$i/beacond.sock" --json status 2>/dev/null |
			jq -r '.drain | "\(.uploads_acked) \(.lag_uploads) \(.lag_oldest_s)"' ||
			echo "0 0 0"
	done | awk '{a += $1; l += $2; if ($3 > o) o = $3} END {print a + 0, l + 0, o + 0}'
}

# Every 0.5 s: "seconds since start, acked, lag, oldest" to FILE.
start_sampler() { # N FILE
	: >"$2"
	(
		t0=$(date +%s.%N)
		while :; do
			echo "$(echo "$(date +%s.%N) - $t0" | bc) $(drain_now "$1")" >>"$2"
			sleep 0.5
		done
	) &
	sampler_pid=$!
}

stop_sampler() {
	[ -n "$sampler_pid" ] || return 0
	kill "$sampler_pid" 2>/dev/null || true
	wait "$sampler_pid" 2>/dev/null || true
	sampler_pid=
}

# CPU seconds (utime + stime, all threads) the fleet's processes have used:
# the beacons, HAProxy and nats-server. Other people's work on the machine
# does not count here, as it does in uploads per wall second.
cpu_s() { # PID...
	local p t=0
	for p in "$@"; do
		t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
	done
	echo "$t / $(getconf CLK_TCK)" | bc -l
}

# "fleet beacons nats-server" CPU seconds so far.
fleet_cpu_s() {
	echo "$(cpu_s "${beacon_pids[@]}" "$haproxy_pid" "$nats_pid")" \
		"$(cpu_s "${beacon_pids[@]}")" "$(cpu_s "$nats_pid")"
}

sim() { # extra agentsim arguments...
	local f0 b0 n0 f1 b1 n1 j
	read -r f0 b0 n0 <<<"$(fleet_cpu_s)"
	j=$("$agentsim" "${sim_common[@]}" --quiet --concurrency "$concurrency" \
		--duration "$duration" "$@" "https://127.0.0.1:$lb_port" 2>>"$run/agentsim.log")
	read -r f1 b1 n1 <<<"$(fleet_cpu_s)"
	jq -c --argjson f "$(echo "$f1 - $f0" | bc -l)" --argjson b "$(echo "$b1 - $b0" | bc -l)" \
		--argjson n "$(echo "$n1 - $n0" | bc -l)" \
		'. + {fleet_cpu_s: $f, beacon_cpu_s: $b, nats_cpu_s: $n}' <<<"$j"
}

# Waits until the fleet's lag is 0 (at most 180 s); prints the seconds waited.
wait_caught_up() { # N
	local t0 lag
	t0=$(date +%s.%N)
	for _ in $(seq 1800); do
		read -r _ lag _ <<<"$(drain_now "$1")"
		[ "$lag" = 0 ] && break
		sleep 0.1
	done
	echo "$(date +%s.%N) - $t0" | bc
}

# One JSON line per step; lag figures from the sampler's file.
emit() { # STEP N REPEAT SIMJSON [SAMPLES CATCHUP_S]
	python3 - "$@" <<-'EOF' >>"$jsonl"
	import json, sys
	step, n, rep, sim = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
	rec = {"step": step, "beacons": n, "repeat": rep, "ingest": sim["uploads_per_s"],
	       "uploads": sim["uploads"], "duration_s": sim["duration_s"],
	       "p99_ms": sim["latency_ms"]["p99"], "errors": sum(sim["errors"].values()),
	       "http_503": sim["http_503"],
	       "loadavg_1m": float(open("/proc/loadavg").read().split()[0]),
	       "fleet_cpu_s": sim["fleet_cpu_s"],
	       "per_cpu_s": sim["uploads"] / sim["fleet_cpu_s"] if sim["fleet_cpu_s"] else 0,
	       "beacon_cpu_s": sim["beacon_cpu_s"], "nats_cpu_s": sim["nats_cpu_s"],
	       "per_beacon_cpu_s": sim["uploads"] / sim["beacon_cpu_s"] if sim["beacon_cpu_s"] else 0}
	if len(sys.argv) > 5:
	    rows = [list(map(float, l.split())) for l in open(sys.argv[5]) if len(l.split()) == 4]
	    during = [r for r in rows if r[0] <= sim["duration_s"] + 0.25]
	    rec["lag_max"] = max((r[2] for r in during), default=0)
	    rec["oldest_max_s"] = max((r[3] for r in rows), default=0)
	    # acknowledged counts are the beacons' totals since they started
	    rec["acked_during"] = during[-1][1] - rows[0][1] if during else 0
	    span = during[-1][0] - rows[0][0] if during else 0
	    rec["drain_during"] = rec["acked_during"] / span if span > 0 else 0
	    catchup = float(sys.argv[6])
	    rec["catchup_s"] = catchup
	    rec["drain_overall"] = sim["uploads"] / (sim["duration_s"] + catchup)
	print(json.dumps(rec))
	EOF
}

step_off() { # N REPEAT
	start_fleet "$1" ""
	local j
	# the same sampling as with the drain on, so that its cost is in both
	start_sampler "$1" "$run/off.samples"
	j=$(sim)
	stop_sampler
	emit off "$1" "$2" "$j"
	stop_fleet
	log "n=$1 drain off: $(jq -r .uploads_per_s <<<"$j") uploads/s"
}

step_on() { # N REPEAT: leaves the fleet running, caught up, for step_at80
	start_fleet "$1" "r$2n$1"
	start_sampler "$1" "$run/on.samples"
	local j c
	j=$(sim)
	c=$(wait_caught_up "$1")
	stop_sampler
	emit on "$1" "$2" "$j" "$run/on.samples" "$c"
	log "n=$1 drain on: $(jq -r .uploads_per_s <<<"$j") uploads/s, caught up ${c} s after"
}

step_at80() { # N REPEAT CAPACITY
	local rate j c
	rate=$(echo "$3 * 0.8 / 1" | bc)
	start_sampler "$1" "$run/at80.samples"
	j=$(sim --rate "$rate" --concurrency 1000)
	c=$(wait_caught_up "$1")
	stop_sampler
	emit at80 "$1" "$2" "$j" "$run/at80.samples" "$c"
	stop_fleet
	log "n=$1 at 80% ($rate/s): $(jq -r .uploads_per_s <<<"$j") uploads/s"
}

# --- the runs -------------------------------------------------------------------

: >"$jsonl"
log "repeat $repeat, sizes $sizes, $duration s a step, mode $mode, $concurrency connections"
for r in $(seq "$repeat"); do
	for n in $sizes; do
		if [ $((r % 2)) = 1 ]; then
			step_off "$n" "$r"
			cap=$(jq -s "map(select(.step == \"off\" and .beacons == $n and .repeat == $r))
				| .[0].ingest" "$jsonl")
			step_on "$n" "$r"
			step_at80 "$n" "$r" "$cap"
		else
			# the capacity for at80 comes from the "off" step, run after
			step_on "$n" "$r"
			stop_fleet
			step_off "$n" "$r"
			cap=$(jq -s "map(select(.step == \"off\" and .beacons == $n and .repeat == $r))
				| .[0].ingest" "$jsonl")
			start_fleet "$n" "r${r}n${n}x"
			step_at80 "$n" "$r" "$cap"
		fi
	done
done

python3 "$root/perf/fleet_report.py" "$jsonl" --command "$invocation" \
	--machine "$(nproc) CPUs, $(uname -r)" --commit "$(git -C "$root" rev-parse --short HEAD)" |
	tee "$result"
