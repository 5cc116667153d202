#!/usr/bin/env bash
# The svcwrap demo: wrap `nc -l 9999` and watch its entry in a local Consul
# dev agent appear, pass, answer DNS, and vanish when nc exits.
#
#   make demo          (builds bin/consul and bin/svcwrap first)
#
# Ports: the service on 9999; the agent on the first free block of N300-N302
# (server, Serf), N500 (HTTP) and N600 (DNS), N from 18 to 27 (printed).
# Everything it starts is stopped on exit, Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."

consul=${SVCWRAP_CONSUL_BIN:-bin/consul}
svcwrap=bin/svcwrap
service_port=9999

heading() { printf '\n==> %s\n' "$*"; }
fail() {
	echo "demo: $*" >&2
	exit 1
}

# port_in_use PORT: a TCP socket listens on PORT, or a UDP socket is bound to
# it. Read from the kernel's tables: connecting would steal nc's one client.
port_in_use() {
	local hex files=()
	hex=$(printf ':%04X' "$1")
	for f in /proc/net/tcp /proc/net/tcp6 /proc/net/udp /proc/net/udp6; do
		[[ -r $f ]] && files+=("$f")
	done
	awk -v p="$hex" 'FNR > 1 && substr($2, length($2) - 4) == p && (FILENAME ~ /udp/ || $4 == "0A") { found = 1 }
		END { exit !found }' "${files[@]}"
}

# wait_for SECONDS WHAT COMMAND...: run COMMAND every 0.1 s until it succeeds.
wait_for() {
	local secs=$1 what=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@"; do
		((SECONDS < deadline)) || fail "timed out after ${secs}s waiting for $what"
		sleep 0.1
	done
}

running() { kill -0 "$1" 2>/dev/null; }

# stop PID: SIGTERM, up to 10 s, then SIGKILL; reap it if it is our child.
stop() {
	local pid=$1
	running "$pid" || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 100); do
		running "$pid" || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

consul_pid='' svcwrap_pid='' work=''
cleanup() {
	local code=$? children=''
	trap - EXIT HUP INT TERM # PIPE stays trapped: cleanup may write to a closed pipe
	if [[ -n $svcwrap_pid ]]; then
		children=$(pgrep -P "$svcwrap_pid" || true)
		stop "$svcwrap_pid" # it deregisters first, so the agent must still run
		for pid in $children; do stop "$pid"; done
	fi
	[[ -z $consul_pid ]] || stop "$consul_pid"
	if ((code != 0 && code < 129)) && [[ -n $work ]]; then
		for log in "$work"/*.log; do
			printf '\n--- %s (last lines)\n' "$log" >&2
			tail -n 15 "$log" >&2 || true
		done
	fi
	[[ -z $work ]] || rm -rf "$work"
	exit "$code"
}
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 141' PIPE
trap 'exit 143' TERM

heading "Checking the ground"
[[ -x $consul ]] || fail "consul agent not found at $consul: run \`make consul\`"
[[ -x $svcwrap ]] || fail "svcwrap not found at $svcwrap: run \`make build\`"
for cmd in nc curl dig; do
	command -v "$cmd" >/dev/null || fail "$cmd not found: run scripts/deps.sh"
done
port_in_use "$service_port" && fail "port $service_port is in use: stop whatever listens there (nc -l $service_port needs it)"
found=''
for n in {18..27}; do
	server_port=${n}300 serf_lan_port=${n}301 serf_wan_port=${n}302 http_port=${n}500 dns_port=${n}600
	for p in "$server_port" "$serf_lan_port" "$serf_wan_port" "$http_port" "$dns_port"; do
		port_in_use "$p" && continue 2
	done
	found=$n
	break
done
[[ -n $found ]] || fail "no free block of ports for the Consul agent in 18300-27600"
api=http://127.0.0.1:$http_port
work=$(mktemp -d -t svcwrap-demo.XXXXXX)
echo "port $service_port free; agent ports ${server_port}-${serf_wan_port}, $http_port, $dns_port; logs in $work"

heading "Starting a Consul dev agent (HTTP 127.0.0.1:$http_port, DNS 127.0.0.1:$dns_port)"
# setsid: a Ctrl-C reaches the script, which stops svcwrap before the agent.
setsid "$consul" -dev -node svcwrap-demo -client 127.0.0.1 -bind 127.0.0.1 \
	-http-port "$http_port" -dns-port "$dns_port" -server-port "$server_port" \
	-serf-lan-port "$serf_lan_port" -serf-wan-port "$serf_wan_port" \
	-grpc-port -1 -grpc-tls-port -1 -log-level warn >"$work/consul.log" 2>&1 &
consul_pid=$!
leader_elected() {
	running "$consul_pid" || fail "the Consul agent exited"
	[[ $(curl -fsS --max-time 1 "$api/v1/status/leader" 2>/dev/null) == *[0-9]* ]]
}
wait_for 30 "the agent to elect a leader" leader_elected
echo "leader: $(curl -fsS "$api/v1/status/leader")"

heading "Wrapping nc: $svcwrap --consul 127.0.0.1:$http_port --port $service_port netcat -- nc -l $service_port"
setsid "$svcwrap" --consul "127.0.0.1:$http_port" --port "$service_port" netcat -- nc -l "$service_port" \
	>"$work/nc.out" 2>"$work/svcwrap.log" &
svcwrap_pid=$!
netcat_passing() {
	running "$svcwrap_pid" || fail "svcwrap exited early"
	local checks
	checks=$(curl -fsS --max-time 1 "$api/v1/health/checks/netcat" 2>/dev/null) || return 1
	[[ $checks =~ \"Status\":\ *\"passing\" ]]
}
wait_for 30 "service netcat to be passing" netcat_passing
echo "service netcat is passing"

heading "Catalog entry: curl $api/v1/catalog/service/netcat"
curl -fsS "$api/v1/catalog/service/netcat?pretty"

heading "DNS: dig @127.0.0.1 -p $dns_port netcat.service.consul SRV +noall +answer"
dig @127.0.0.1 -p "$dns_port" netcat.service.consul SRV +noall +answer

heading "Talking to nc: curl --max-time 2 --data Hello http://127.0.0.1:$service_port/areyouthere"
echo "(nc never answers, so curl times out after 2 s; that is expected)"
curl -sS --max-time 2 --data Hello "http://127.0.0.1:$service_port/areyouthere" 2>&1 || echo "curl exit code $?"

heading "What nc received"
cat "$work/nc.out"
echo

heading "svcwrap exits when nc does"
svcwrap_exited() { ! running "$svcwrap_pid"; }
wait_for 20 "svcwrap to exit" svcwrap_exited
code=0
wait "$svcwrap_pid" || code=$?
svcwrap_pid=''
echo "svcwrap exit code: $code (nc's)"
if [[ -s $work/svcwrap.log ]]; then
	echo "svcwrap's log:"
	sed 's/^/    /' "$work/svcwrap.log"
fi

heading "The service is gone"
netcat_gone() {
	local services
	services=$(curl -fsS --max-time 1 "$api/v1/agent/services" 2>/dev/null) || return 1
	[[ $services != *'"netcat"'* ]]
}
wait_for 15 "service netcat to be deregistered" netcat_gone
echo "agent services: $(curl -fsS "$api/v1/agent/services")"

heading "Done"
