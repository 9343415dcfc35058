# Sourced by the perf/ scripts: what every one of them does to the server
# it started. Callers keep the server's pid in $server_pid.

# SIGTERM, then SIGKILL after 10 s: a benchmark's server that does not stop
# must not linger into the next run's figures.
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

# Waits for beacond's ready line in LOG: 0 once it is there, 1 when PID
# has exited or 60 s have passed (a DPDK EAL takes seconds to start).
wait_ready() { # LOG PID
	wait_line "$1" "$2" ": ready: listening on" 600
}

# Until LOG holds PATTERN (0), PID ends or TRIES tenths of a second pass (1).
wait_line() { # LOG PID PATTERN TRIES
	for _ in $(seq "$4"); do
		grep -q "$3" "$1" && return 0
		kill -0 "$2" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# The [server] and [tls] sections of a benchmark's beacond, on standard
# output: BACKEND, LISTEN (address:port), files under $run (data, dl,
# beacond.sock, pki/). One worker; everything else at its default.
beacond_conf() { # BACKEND LISTEN
	cat <<-EOF
	[server]
	backend = $1
	listen = $2
	workers = 1
	data_dir = $run/data
	download_dir = $run/dl
	control_socket = $run/beacond.sock

	[tls]
	cert = $run/pki/server.pem
	key = $run/pki/server.key
	issuers = $run/pki/agents-ca.pem
	EOF
}

# The demo PKI in $out/pki, the server's files copied to $run/pki, and
# agentsim's 1,000 agent certificates made once in $out/agents.
bench_pki() { # AGENTSIM
	bash "$root/config/demo-pki.sh" "$out/pki" >/dev/null
	mkdir -p "$run/pki"
	cp "$out/pki"/{server.pem,server.key,agents-ca.pem} "$run/pki/"
	"$1" --certs 1000 --ca-cert "$out/pki/agents-ca.pem" \
		--ca-key "$out/pki/agents-ca.key" --cache "$out/agents" --requests 1 \
		--quiet --timeout 1 https://127.0.0.1:1 >/dev/null 2>&1 || true
}

