#!/usr/bin/env bash
# perf/bigupload.sh: 1 MiB keep-alive uploads, beacond (fdatasync before
# every 201) against nginx (DAV PUT to disk, no fsync), in MB per MACHINE
# CPU second and per server CPU second (issue 18 item 5).
#
#   perf/bigupload.sh [--runs N] [--duration S] [--body-size 1M]
#                     [--concurrency C] [--beacond PATH] [--base PATH]
#                     [--out FILE]
#
# Each run measures beacond then nginx (interleaved: B, N, B, N, ...), each
# pinned to CPU 0 with one worker, agentsim pinned to CPU 1, 32 keep-alive
# connections. --base PATH adds a second beacond binary (say, a build of
# main), measured in the same turns (B, base, N, ...), as "base". The measured window ends with a `sync`, so that what nginx
# left dirty in the page cache is written back inside it: the kernel's
# writeback is charged to whoever caused it.
# - machine CPU s: every CPU's busy time from /proc/stat over the window
#   (user nice system irq softirq steal) minus agentsim's own CPU time
#   (its client_cpu_s: utime + stime). Work of other users of the machine
#   counts too: on a shared machine this figure is noisy.
# - server CPU s: utime + stime of the server's threads (/proc/PID/stat).
# - kthread CPU s: utime + stime of the kernel's threads (children of
#   kthreadd: writeback and journal workers, among others) over the window.
# Prints one JSON line per measurement to the --out file (default
# perf/out/bigupload.jsonl) and a table of medians and ranges.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=3
duration=10
body=1M
concurrency=32
beacond=$root/build/beacond
base=
jsonl=$root/perf/out/bigupload.jsonl
while [ $# -gt 0 ]; do
	case $1 in
	--runs) runs=$2; shift ;;
	--duration) duration=$2; shift ;;
	--body-size) body=$2; shift ;;
	--concurrency) concurrency=$2; shift ;;
	--beacond) beacond=$2; shift ;;
	--base) base=$2; shift ;;
	--out) jsonl=$2; shift ;;
	-h|--help) sed -n '2,23p' "$0"; exit 0 ;;
	*) echo "bigupload.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

out=$root/perf/out
agentsim=$root/build/perf/agentsim
run=$(mktemp -d /tmp/beacon-bigupload.XXXXXX)
chmod 755 "$run"
mkdir -p "$out" "$(dirname "$jsonl")"
: >"$jsonl"
server_pid=
hz=$(getconf CLK_TCK)

log() { echo "bigupload: $*" >&2; }

stop_server() {
	[ -n "$server_pid" ] || return 0
	kill "$server_pid" 2>/dev/null || true
	wait "$server_pid" 2>/dev/null || true
	server_pid=
}
cleanup() {
	stop_server
	cp "$run"/*.log "$run"/sim.* "$out/" 2>/dev/null || true
	rm -rf "$run"
}
trap cleanup EXIT

[ -x "$beacond" ] && [ -x "$agentsim" ] || {
	log "build first: ninja -C build beacond perf/agentsim"
	exit 1
}
command -v nginx >/dev/null || { log "nginx is not installed (perf/bench.sh installs it)"; exit 1; }
bash "$root/config/demo-pki.sh" "$out/pki" >/dev/null
mkdir -p "$run/pki"
cp "$out/pki"/{server.pem,server.key,agents-ca.pem} "$run/pki/"

port_for() { case $1 in beacond) echo 11453 ;; nginx) echo 11454 ;; base) echo 11455 ;; esac; }

server_command() { # SERVER PORT
	case $1 in
	beacond|base)
		mkdir -p "$run/beacond-data" "$run/beacond-dl"
		cat >"$run/beacond.conf" <<-EOF
		[server]
		listen = 127.0.0.1:$2
		workers = 1
		data_dir = $run/beacond-data
		download_dir = $run/beacond-dl
		control_socket = $run/beacond.sock
		[tls]
		cert = $run/pki/server.pem
		key = $run/pki/server.key
		issuers = $run/pki/agents-ca.pem
		[log]
		access = no
		EOF
		if [ "$1" = base ]; then echo "$base -c $run/beacond.conf"; else echo "$beacond -c $run/beacond.conf"; fi ;;
	nginx)
		mkdir -p "$run/nginx-data" "$run/nginx-body"
		sed -e "s|@CRL@||g" -e "s|@RUN@|$run|g" -e "s|@PORT@|$2|g" \
			"$root/perf/peers/nginx.conf.in" >"$run/nginx.conf"
		echo "nginx -e $run/nginx-error.log -c $run/nginx.conf" ;;
	esac
}

start_server() { # SERVER
	local port cmd
	port=$(port_for "$1")
	cmd=$(server_command "$1" "$port")
	# beacond listens with SO_REUSEPORT: a stray listener would take a share
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		log "something already listens on 127.0.0.1:$port"
		return 1
	fi
	if [ "$(id -u)" = 0 ]; then chown -R nobody:nogroup "$run"; fi
	if [ "$(id -u)" = 0 ]; then
		(exec taskset -c 0 setpriv --reuid=nobody --regid=nogroup --clear-groups -- $cmd) \
			>>"$run/$1.log" 2>&1 &
	else
		(exec taskset -c 0 $cmd) >>"$run/$1.log" 2>&1 &
	fi
	server_pid=$!
	for _ in $(seq 300); do
		kill -0 "$server_pid" 2>/dev/null || break
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		sleep 0.1
	done
	log "$1 did not start:"; cat "$run/$1.log" >&2
	return 1
}

proc_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'; }
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
kthread_ticks() { # children of kthreadd (pid 2); some exit while read
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | sed 's/^[0-9]* (.*) //' |
		awk '$2 == 2 { t += $12 + $13 } END { print t + 0 }'
}

measure() { # SERVER REP
	local port s0 s1 m0 m1 k0 k1 json
	port=$(port_for "$1")
	start_server "$1"
	s0=$(proc_ticks "$server_pid"); m0=$(machine_ticks); k0=$(kthread_ticks)
	taskset -c 1 "$agentsim" --mode keepalive --tls 1.3 --body-size "$body" \
		--concurrency "$concurrency" --duration "$duration" --quiet --certs 1000 \
		--ca-cert "$out/pki/agents-ca.pem" --ca-key "$out/pki/agents-ca.key" \
		--cache "$out/agents" "https://127.0.0.1:$port" >"$run/sim.json" 2>>"$run/$1-sim.log" ||
		log "$1: agentsim exited with $?"
	sync
	s1=$(proc_ticks "$server_pid"); m1=$(machine_ticks); k1=$(kthread_ticks)
	stop_server
	json=$(tail -1 "$run/sim.json")
	echo "${json:-{\}}" | jq -c --arg server "$1" --argjson rep "$2" --argjson hz "$hz" \
		--argjson s "$((s1 - s0))" --argjson m "$((m1 - m0))" --argjson k "$((k1 - k0))" \
		'{server: $server, rep: $rep, body_bytes, uploads, mb_per_s, errors,
		  client_cpu_s, server_cpu_s: ($s / $hz), kthread_cpu_s: ($k / $hz),
		  machine_cpu_s: ($m / $hz - .client_cpu_s)}
		 | . + {mb_per_machine_cpu_s: (.body_bytes / 1e6 / .machine_cpu_s),
		    mb_per_server_cpu_s: (.body_bytes / 1e6 / .server_cpu_s)}' >>"$jsonl"
	log "$(tail -1 "$jsonl")"
	# the next measurement starts on an empty, clean disk
	rm -rf "$run/beacond-data" "$run/beacond-dl" "$run/nginx-data" "$run/nginx-body"
	sync
}

log "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg); beacond $($beacond --version 2>/dev/null | head -1)"
for rep in $(seq "$runs"); do
	measure beacond "$rep"
	[ -z "$base" ] || measure base "$rep"
	measure nginx "$rep"
done

python3 - "$jsonl" <<-'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def col(server, key):
    return [r[key] for r in rows if r["server"] == server]
def fmt(v, p=1):
    return f"{statistics.median(v):.{p}f} ({min(v):.{p}f} - {max(v):.{p}f})" if v else "-"
ratio = {}
for key in ("mb_per_machine_cpu_s", "mb_per_server_cpu_s"):
    n = col("nginx", key)
    ratio[key] = [x / y for x, y in zip(col("beacond", key), n)]
    ratio["base" + key] = [x / y for x, y in zip(col("base", key), n)]
print("| server | MB / machine CPU s | MB / server CPU s | MB/s (wall) | kthread CPU s | errors |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for s in ("beacond", "base", "nginx"):
    if not col(s, "uploads"):
        continue
    errs = sum(sum(r["errors"].values()) for r in rows if r["server"] == s and r["errors"])
    print(f"| {s} | {fmt(col(s, 'mb_per_machine_cpu_s'))} | {fmt(col(s, 'mb_per_server_cpu_s'))}"
          f" | {fmt(col(s, 'mb_per_s'))} | {fmt(col(s, 'kthread_cpu_s'))} | {errs} |")
r = ratio
print(f"| beacond / nginx (per run pair) | {fmt(r['mb_per_machine_cpu_s'], 2)}x"
      f" | {fmt(r['mb_per_server_cpu_s'], 2)}x | | | |")
if r["basemb_per_machine_cpu_s"]:
    print(f"| base / nginx (per run pair) | {fmt(r['basemb_per_machine_cpu_s'], 2)}x"
          f" | {fmt(r['basemb_per_server_cpu_s'], 2)}x | | | |")
EOF
