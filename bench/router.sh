#!/usr/bin/env bash
# bench/router.sh — cellrouter vs nginx as reverse proxies in front of the
# same backend, side by side, with wrk; then the latency each adds at a fixed
# rate (bench/rate, an open-loop client: wrk2 is not in Debian).
#
# Everything runs on loopback and stops by itself. It installs nginx and wrk
# from Debian if they are missing (needs root or sudo), builds cellrouter,
# cellctl and the bench tools, starts an embedded etcd (cellctl dev) holding
# a one-cell map whose endpoint is the backend, and prints a table.
#
# Knobs (environment): DURATION (5s per run), ROUNDS (3 ABBA blocks), WARMUP (2s),
# THREADS (2), CONNS (64), RATE (5000), RATE_DURATION (10s), BASE_PORT (19000).
set -euo pipefail

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-3}
WARMUP=${WARMUP:-2s}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
RATE=${RATE:-5000}
RATE_DURATION=${RATE_DURATION:-10s}
BASE_PORT=${BASE_PORT:-19000}
BACKEND_PORT=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
ROUTER_PORT=$((BASE_PORT + 3))
ADMIN_PORT=$((BASE_PORT + 4))
ETCD_PORT=$((BASE_PORT + 5))
ETCD_PEER=$((BASE_PORT + 6))
KEY_HEADER='X-Route-Key: u42'

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d -t cellrouter-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

say() { printf '>> %s\n' "$*" >&2; }

# --- tools -------------------------------------------------------------
need=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v curl >/dev/null 2>&1 || need+=(curl)
if ((${#need[@]})); then
	say "installing ${need[*]} from Debian"
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

say "building cellrouter, cellctl, bench/backend, bench/rate"
(cd "$root" && go build -o "$work/bin/" ./cmd/cellrouter ./cmd/cellctl ./bench/backend ./bench/rate)
bin=$work/bin

wait_http() { # url: wait up to 20s for a 200
	for _ in $(seq 400); do
		if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
		sleep 0.05
	done
	say "timed out waiting for $1"
	return 1
}

# --- backend, etcd and the map -----------------------------------------
"$bin/backend" -listen "127.0.0.1:$BACKEND_PORT" &
pids+=($!)
"$bin/cellctl" dev --listen "127.0.0.1:$ETCD_PORT" --peer "127.0.0.1:$ETCD_PEER" --data-dir "$work/etcd" >"$work/etcd.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$ETCD_PORT/health"
"$bin/cellctl" --etcd "http://127.0.0.1:$ETCD_PORT" --cluster bench map init \
	--cell a1@IDC-A --endpoint "a1=127.0.0.1:$BACKEND_PORT" --reason "router bench" >/dev/null
wait_http "http://127.0.0.1:$BACKEND_PORT/"

# --- cellrouter ----------------------------------------------------------
"$bin/cellrouter" --etcd "http://127.0.0.1:$ETCD_PORT" --cluster bench --discovery map \
	--listen-http "127.0.0.1:$ROUTER_PORT" --listen-grpc "" --admin "127.0.0.1:$ADMIN_PORT" \
	--log-level warn >"$work/cellrouter.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$ADMIN_PORT/readyz"

# --- nginx ---------------------------------------------------------------
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $work/nginx/body;
	proxy_temp_path $work/nginx/proxy;
	fastcgi_temp_path $work/nginx/fastcgi;
	uwsgi_temp_path $work/nginx/uwsgi;
	scgi_temp_path $work/nginx/scgi;
	upstream backend {
		server 127.0.0.1:$BACKEND_PORT;
		keepalive 256;
	}
	server {
		listen 127.0.0.1:$NGINX_PORT;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Host \$host;
			proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
			proxy_set_header X-Forwarded-Host \$http_host;
			proxy_set_header X-Forwarded-Proto \$scheme;
		}
	}
}
EOF
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' 2>"$work/nginx/stderr.log" &
pids+=($!)
wait_http "http://127.0.0.1:$NGINX_PORT/"

# --- wrk -------------------------------------------------------------------
to_ms() { # wrk latency ("812.00us", "1.20ms", "2.01s") to milliseconds
	awk -v v="$1" 'BEGIN {
		n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
		if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
		printf "%.3f", n }'
}
run_wrk() { # name url -> "rps p99ms"
	local out
	out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "$KEY_HEADER" "$2")
	echo "$out" >>"$work/wrk-$1.txt"
	if grep -q 'Non-2xx' <<<"$out"; then
		say "$1 answered errors:"
		echo "$out" >&2
		exit 1
	fi
	local rps p99
	rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
	p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
	echo "$rps $(to_ms "$p99")"
}
warm() { wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP" -H "$KEY_HEADER" "$1" >/dev/null; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# The machine's speed drifts over tens of seconds (shared cores), and a run
# can be slower just for coming second. So the proxies run in ABBA blocks,
# nginx, cellrouter, cellrouter, nginx, 5 s each: a block's ratio (the two
# cellrouter runs' requests over the two nginx runs') cancels a drift that
# is linear over the block, and the summary is the median over the blocks.
say "wrk: ${THREADS} threads, ${CONNS} connections, ${ROUNDS} ABBA blocks of ${DURATION} runs after ${WARMUP} warm-up"
warm "http://127.0.0.1:$BACKEND_PORT/"
run_wrk direct "http://127.0.0.1:$BACKEND_PORT/" >"$work/direct.res"
warm "http://127.0.0.1:$NGINX_PORT/"
warm "http://127.0.0.1:$ROUTER_PORT/"
: >"$work/rounds"
for i in $(seq "$ROUNDS"); do
	n1=$(run_wrk nginx "http://127.0.0.1:$NGINX_PORT/")
	r1=$(run_wrk cellrouter "http://127.0.0.1:$ROUTER_PORT/")
	r2=$(run_wrk cellrouter "http://127.0.0.1:$ROUTER_PORT/")
	n2=$(run_wrk nginx "http://127.0.0.1:$NGINX_PORT/")
	echo "$i $n1 $r1 $r2 $n2" >>"$work/rounds"
done
# rounds: block, nginx rps p99, router rps p99, router rps p99, nginx rps p99
read -r direct_rps direct_p99 <"$work/direct.res"
nginx_rps=$(awk '{print $2; print $8}' "$work/rounds" | median)
nginx_p99=$(awk '{print $3; print $9}' "$work/rounds" | median)
router_rps=$(awk '{print $4; print $6}' "$work/rounds" | median)
router_p99=$(awk '{print $5; print $7}' "$work/rounds" | median)
ratio=$(awk '{printf "%.3f\n", ($4 + $6) / ($2 + $8)}' "$work/rounds" | median)

say "fixed rate: ${RATE} req/s for ${RATE_DURATION} each (bench/rate, open loop)"
run_rate() { "$bin/rate" -url "$1" -rate "$RATE" -duration "$RATE_DURATION" -conns "$CONNS" -H "$KEY_HEADER"; }
field() { awk -v k="$1" '{for (i = 1; i < NF; i++) if ($i == k) print $(i + 1)}'; }
rd=$(run_rate "http://127.0.0.1:$BACKEND_PORT/")
rn=$(run_rate "http://127.0.0.1:$NGINX_PORT/")
rr=$(run_rate "http://127.0.0.1:$ROUTER_PORT/")

echo
echo "cellrouter vs nginx, loopback, $(nproc) cores, $(go env GOVERSION), $(nginx -v 2>&1 | sed 's/.*\///')"
printf '%-6s %24s %24s %7s\n' "block" "nginx req/s (A, A')" "cellrouter req/s (B, B')" "ratio"
awk '{printf "%-6s %11s %12s %11s %12s %7.3f\n", $1, $2, $8, $4, $6, ($4 + $6) / ($2 + $8)}' "$work/rounds"
echo
printf '%-12s %12s %12s\n' "median" "req/s" "p99 (ms)"
printf '%-12s %12s %12s\n' "direct" "$direct_rps" "$direct_p99"
printf '%-12s %12s %12s\n' "nginx" "$nginx_rps" "$nginx_p99"
printf '%-12s %12s %12s\n' "cellrouter" "$router_rps" "$router_p99"
echo "throughput ratio cellrouter/nginx, median of the blocks: $ratio (target >= 0.80)"
echo
printf '%-12s %10s %10s %10s %10s %12s\n' "at ${RATE}/s" "p50 (ms)" "p99 (ms)" "p99.9 (ms)" "errors" "p99 added"
for row in "direct:$rd" "nginx:$rn" "cellrouter:$rr"; do
	name=${row%%:*}
	line=${row#*:}
	p99=$(field p99_ms <<<"$line")
	added=$(awk -v a="$p99" -v b="$(field p99_ms <<<"$rd")" 'BEGIN { printf "%.3f", a - b }')
	printf '%-12s %10s %10s %10s %10s %12s\n' "$name" "$(field p50_ms <<<"$line")" "$p99" "$(field p999_ms <<<"$line")" "$(field errors <<<"$line")" "$added"
done
