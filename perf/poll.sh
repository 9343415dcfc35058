#!/usr/bin/env bash
# perf/poll.sh: 10,000 agents poll their policy with If-Modified-Since over
# mutual TLS, beacond against nginx serving the same files, in requests per
# server CPU second and per second (issue 17 item 5).
#
#   perf/poll.sh [--repeat N] [--duration S] [--certs N] [--stale F]
#                [--policy-size SIZE] [--package-size SIZE]
#                [--scenarios "policy-ka policy-resume package-poll download"]
#                [--concurrency C] [--servers "beacond nginx"] [--out FILE]
#
# --servers may add nginx-plain: nginx without open_file_cache (it opens
# and stats the file for every request, as its default configuration does).
# Scenarios (each GET carries the agent's own client certificate):
# - policy-ka: keep-alive connections, each poll for the next device's
#   Policy/<device>.npl (one file per agent, --policy-size, default 4k);
#   1 - F of them with If-Modified-Since equal to the file's date (304),
#   F (--stale, default 0.05) with an older date (200 and the whole file).
# - policy-resume: the same with one connection per poll, a TLS 1.3
#   session resumed from the agent's own ticket (the warm-up gives every
#   agent one full handshake first, so the window is all resumptions).
# - package-poll: keep-alive polls of one shared package (--package-size,
#   default 1M), 304 or (stale) the whole package.
# - download: keep-alive downloads of the shared package, every one a 200
#   (beacond's hot-file cache against nginx's page cache).
# --repeat N (default 3) rounds, the servers interleaved (beacond, nginx,
# beacond, ...). Each server is started once a round and goes through the
# scenarios in order, pinned to CPU 0 with one worker, unprivileged;
# agentsim is pinned to CPU 1. Each scenario has a warm-up (policy-ka: two
# polls of every device's file, so beacond's cache, which admits a file on
# its second request, and nginx's open_file_cache hold them all;
# policy-resume: a full handshake per agent) and then --duration S
# (default 5) measured seconds. Server CPU s: utime + stime of the server
# process (all threads, /proc/PID/stat), read by agentsim at the start and
# the end of the measured window. One JSON line per measurement goes to the
# --out file (default perf/out/poll.jsonl); a table of medians and ranges
# to stdout. About 4 minutes with the defaults.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
runs=3
duration=5
certs=10000
stale=0.05
policy_size=4k
package_size=1M
concurrency=32
servers="beacond nginx"
scenarios="policy-ka policy-resume package-poll download"
jsonl=$root/perf/out/poll.jsonl
while [ $# -gt 0 ]; do
	case $1 in
	--repeat | --runs) runs=$2; shift ;;
	--duration) duration=$2; shift ;;
	--certs) certs=$2; shift ;;
	--stale) stale=$2; shift ;;
	--policy-size) policy_size=$2; shift ;;
	--package-size) package_size=$2; shift ;;
	--scenarios) scenarios=$2; shift ;;
	--concurrency) concurrency=$2; shift ;;
	--servers) servers=$2; shift ;;
	--out) jsonl=$2; shift ;;
	-h | --help) sed -n '2,36p' "$0"; exit 0 ;;
	*) echo "poll.sh: unknown option $1" >&2; exit 2 ;;
	esac
	shift
done

out=$root/perf/out
agentsim=$root/build/perf/agentsim
beacond=$root/build/beacond
run=$(mktemp -d /tmp/beacon-poll.XXXXXX)
chmod 755 "$run"
mkdir -p "$out" "$(dirname "$jsonl")"
: >"$jsonl"
server_pid=
# the files' mtime, and the If-Modified-Since of an up-to-date agent
mtime=1767225600
since=$(date -u -d "@$mtime" '+%a, %d %b %Y %H:%M:%S GMT')

log() { echo "poll: $*" >&2; }

. "$root/perf/lib.sh" # stop_server
cleanup() {
	stop_server
	cp "$run"/*.log "$out/" 2>/dev/null || true
	rm -rf "$run"
}
trap cleanup EXIT

as_root() {
	if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

to_bytes() { numfmt --from=iec "${1^^}"; }

setup() {
	if ! command -v nginx >/dev/null; then
		log "installing nginx from Debian"
		as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends nginx >"$run/apt.log" 2>&1 ||
			{ cat "$run/apt.log" >&2; exit 1; }
	fi
	cd "$root"
	[ -f build/build.ninja ] || meson setup build >"$run/meson.log"
	ninja -C build beacond perf/agentsim >"$run/ninja.log" 2>&1 ||
		{ cat "$run/ninja.log" >&2; exit 1; }
	bash "$root/config/demo-pki.sh" "$out/pki" >/dev/null
	mkdir -p "$run/pki"
	cp "$out/pki"/{server.pem,server.key,agents-ca.pem} "$run/pki/"
}

# One tree for both servers: beacond's download_dir is nginx's
# root/ManageSoftDL. Every file has the same mtime, in the past.
make_files() {
	local dl=$run/dl/ManageSoftDL
	mkdir -p "$dl/Policy" "$dl/Packages"
	python3 - "$dl" "$certs" "$(to_bytes "$policy_size")" "$(to_bytes "$package_size")" <<-'EOF'
	import os, sys
	dl, certs, policy, package = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
	for i in range(1, certs + 1):
	    name = f"agent-{i:06d}"
	    line = f"<Policy device='{name}' revision='42'/>\n".encode()
	    with open(f"{dl}/Policy/{name}.npl", "wb") as f:
	        f.write((line * (policy // len(line) + 1))[:policy])
	with open(f"{dl}/Packages/package.bin", "wb") as f:
	    f.write(os.urandom(package))
	EOF
	find "$run/dl" -type f -exec touch -d "@$mtime" {} +
	# beacond gives a file changed under 2 s ago (its ctime is now) no
	# validators and keeps it out of its cache: let that time pass. The
	# tree is world-readable and never chowned: a chown moves ctime too.
	chmod -R a+rX "$run/dl"
	sleep 3
}

port_for() { case $1 in beacond) echo 11463 ;; nginx) echo 11464 ;; nginx-plain) echo 11465 ;; esac; }

server_command() { # SERVER PORT
	case $1 in
	beacond)
		mkdir -p "$run/beacond-data"
		cat >"$run/beacond.conf" <<-EOF
		[server]
		listen = 127.0.0.1:$2
		workers = 1
		data_dir = $run/beacond-data
		download_dir = $run/dl/ManageSoftDL
		control_socket = $run/beacond.sock
		[tls]
		cert = $run/pki/server.pem
		key = $run/pki/server.key
		issuers = $run/pki/agents-ca.pem
		[limits]
		max_connections = 20000
		[download]
		cache_file_max = $package_size
		[log]
		access = no
		EOF
		echo "$beacond -c $run/beacond.conf" ;;
	nginx | nginx-plain)
		local plain=
		mkdir -p "$run/nginx-body"
		[ "$1" = nginx ] || plain=/open_file_cache/d
		sed -e "s|@RUN@|$run|g" -e "s|@PORT@|$2|g" -e "$plain" \
			"$root/perf/peers/nginx-download.conf.in" >"$run/$1.conf"
		echo "nginx -e $run/nginx-error.log -c $run/$1.conf" ;;
	esac
}

start_server() { # SERVER
	local port cmd
	port=$(port_for "$1")
	cmd=$(server_command "$1" "$port")
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		log "something already listens on 127.0.0.1:$port"
		return 1
	fi
	if [ "$(id -u)" = 0 ]; then
		find "$run" -path "$run/dl" -prune -o -exec chown nobody:nogroup {} +
		# shellcheck disable=SC2086 # cmd is a command line
		(exec taskset -c 0 setpriv --reuid=nobody --regid=nogroup --clear-groups -- $cmd) \
			>>"$run/$1.log" 2>&1 &
	else
		# shellcheck disable=SC2086
		(exec taskset -c 0 $cmd) >>"$run/$1.log" 2>&1 &
	fi
	server_pid=$!
	for _ in $(seq 300); do
		kill -0 "$server_pid" 2>/dev/null || break
		(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
		sleep 0.1
	done
	log "$1 did not start:"
	cat "$run/$1.log" >&2
	return 1
}

scenario_args() { # SCENARIO
	local policy=$(($(to_bytes "$policy_size"))) package=$(($(to_bytes "$package_size")))
	case $1 in
	policy-ka)
		echo "--mode keepalive --path /ManageSoftDL/Policy/{device}.npl" \
			"--if-modified-since '$since' --stale $stale --expect-length $policy" \
			"--warmup $((2 * certs))" ;;
	policy-resume)
		echo "--mode resume --path /ManageSoftDL/Policy/{device}.npl" \
			"--if-modified-since '$since' --stale $stale --expect-length $policy" \
			"--warmup $certs" ;;
	package-poll)
		echo "--mode keepalive --path /ManageSoftDL/Packages/package.bin" \
			"--if-modified-since '$since' --stale $stale --expect-length $package" \
			"--warmup 100" ;;
	download)
		echo "--mode keepalive --path /ManageSoftDL/Packages/package.bin" \
			"--expect-length $package --warmup 100" ;;
	esac
}

measure() { # SERVER REP SCENARIO
	local port args json
	port=$(port_for "$1")
	args=$(scenario_args "$3")
	eval "set -- $1 $2 $3 $args"
	local server=$1 rep=$2 scenario=$3
	shift 3
	taskset -c 1 "$agentsim" --method GET "$@" --tls 1.3 --certs "$certs" \
		--concurrency "$concurrency" --duration "$duration" --quiet \
		--server-pid "$server_pid" --timeout 30 \
		--ca-cert "$out/pki/agents-ca.pem" --ca-key "$out/pki/agents-ca.key" \
		--cache "$out/agents" "https://127.0.0.1:$port" >"$run/sim.json" \
		2>>"$run/$server-sim.log" || log "$server $scenario: agentsim exited with $?"
	json=$(tail -1 "$run/sim.json")
	echo "${json:-{\}}" | jq -c --arg server "$server" --arg scenario "$scenario" \
		--argjson rep "$rep" \
		'{server: $server, scenario: $scenario, rep: $rep, requests, requests_per_s,
		  http_200, http_304, body_bytes, resumed_fraction, handshakes, errors,
		  server_cpu_s, client_cpu_s, latency_ms}
		 | . + {requests_per_server_cpu_s:
		        (if .server_cpu_s > 0 then .requests / .server_cpu_s else null end)}' >>"$jsonl"
	log "$(tail -1 "$jsonl")"
}

setup
make_files
log "$(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg);" \
	"beacond $($beacond --version 2>/dev/null | head -1); $(nginx -v 2>&1)"
for rep in $(seq "$runs"); do
	for server in $servers; do
		start_server "$server"
		for scenario in $scenarios; do
			measure "$server" "$rep" "$scenario"
		done
		stop_server
	done
done

python3 - "$jsonl" <<-'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def col(server, scenario, key):
    return [r[key] for r in sorted(rows, key=lambda r: r["rep"])
            if r["server"] == server and r["scenario"] == scenario and r.get(key) is not None]
def fmt(v, p=0):
    return f"{statistics.median(v):,.{p}f} ({min(v):,.{p}f} - {max(v):,.{p}f})" if v else "-"
print("| scenario | peer | beacond req / server CPU s | peer req / server CPU s | beacond / peer"
      " | beacond req/s | peer req/s | 200 / 304 (beacond; peer) | errors (beacond; peer) |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
peers = [s for s in dict.fromkeys(r["server"] for r in rows) if s != "beacond"]
for sc in dict.fromkeys(r["scenario"] for r in rows):
    for peer in peers:
        b = col("beacond", sc, "requests_per_server_cpu_s")
        n = col(peer, sc, "requests_per_server_cpu_s")
        ratio = [x / y for x, y in zip(b, n) if y] if len(b) == len(n) else []
        def split(s):
            return f"{sum(col(s, sc, 'http_200'))} / {sum(col(s, sc, 'http_304'))}"
        def errs(s):
            return sum(sum(e.values()) for e in col(s, sc, "errors"))
        print(f"| {sc} | {peer} | {fmt(b)} | {fmt(n)} | {fmt(ratio, 2)}x"
              f" | {fmt(col('beacond', sc, 'requests_per_s'))} | {fmt(col(peer, sc, 'requests_per_s'))}"
              f" | {split('beacond')}; {split(peer)} | {errs('beacond')}; {errs(peer)} |")
for s in ["beacond"] + peers:
    f = col(s, "policy-resume", "resumed_fraction")
    if f:
        print(f"{s} policy-resume resumed fraction: " + ", ".join(f"{x:.3f}" for x in f))
EOF
