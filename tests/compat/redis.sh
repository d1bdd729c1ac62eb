#!/usr/bin/env bash
# redis, unmodified, both directions:
#  1. redis-server runs in the isolated namespace, listening on 127.0.0.1:22030 through
#     xsockd (XSOCK_ROUTE 127.0.0.0/8:22030 routes the bind); from the host,
#     `redis-benchmark -n 20000 -q` (50 parallel connections, every default test) must
#     complete and report a rate for each test, and a 1 MiB random value written with
#     `redis-cli -x SET` must come back byte-exact from `redis-cli --raw GET`.
#  2. redis-server on the host (127.0.0.1:22031); redis-benchmark and redis-cli run in the
#     namespace through xsockd: the same checks.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
require_programs redis-server redis-cli redis-benchmark

ns_port=22030
host_port=22031
expect_port_free "$ns_port"
expect_port_free "$host_port"
log "redis-server $(debian_version redis-server), redis-tools $(debian_version redis-tools)"

head -c $((1024 * 1024)) /dev/urandom >"$WORK/value.bin" || fail "cannot make the value"

# server_cmd PORT: sets SERVER_CMD to a private, memory-only redis-server in the
# foreground, logging to stdout.
server_cmd() {
  SERVER_CMD=(redis-server --port "$1" --bind 127.0.0.1 --protected-mode no --daemonize no
              --save "" --appendonly no --dir "$WORK" --logfile "" --loglevel notice)
}

# check_clients WHERE RUNNER PORT SERVER_LOG: redis-benchmark and the 1 MiB SET/GET,
# the clients run through RUNNER (on_host or in_ns).
check_clients() {
  local where=$1 runner=$2 port=$3 server_log=$4 rc
  local bench=$WORK/bench.$port.out
  $runner timeout -k 5 90 redis-benchmark -h 127.0.0.1 -p "$port" -n 20000 -q \
    </dev/null >"$bench" 2>&1
  rc=$?
  # -q rewrites a progress line with \r; keep only the final lines.
  tr '\r' '\n' <"$bench" | grep -a 'requests per second' >"$bench.rates"
  [[ $rc -eq 0 ]] || fail_with_logs "$where: redis-benchmark exited $rc" "$bench" "$server_log"
  local tests bad
  tests=$(wc -l <"$bench.rates")
  # Every test must report a positive rate ("SET: 12345.67 requests per second, p50=...").
  bad=$(awk '{ for (i = 1; i < NF; i++) if ($(i + 1) == "requests") { if ($i + 0 <= 0) n++; break } }
             END { print n + 0 }' "$bench.rates")
  [[ $tests -ge 10 && $bad -eq 0 ]] ||
    fail_with_logs "$where: redis-benchmark reported $tests rates ($bad not positive)" "$bench"
  log "$where: redis-benchmark: $tests tests: $(sed 's/ requests per second.*//' "$bench.rates" | tr '\n' ' ' | sed 's/  */ /g')"

  counters "before-set-$port"
  $runner timeout -k 5 30 redis-cli -h 127.0.0.1 -p "$port" -x SET xsock:value \
    <"$WORK/value.bin" >"$WORK/set.out" 2>&1
  rc=$?
  [[ $rc -eq 0 && $(cat "$WORK/set.out") == OK ]] ||
    fail_with_logs "$where: redis-cli SET exited $rc" "$WORK/set.out" "$server_log"
  $runner timeout -k 5 30 redis-cli -h 127.0.0.1 -p "$port" --raw GET xsock:value \
    </dev/null >"$WORK/get.out" 2>"$WORK/get.err"
  rc=$?
  [[ $rc -eq 0 ]] || fail_with_logs "$where: redis-cli GET exited $rc" "$WORK/get.err" "$server_log"
  # --raw ends the reply with one newline of its own.
  [[ $(tail -c 1 "$WORK/get.out" | od -An -tx1 | tr -d ' ') == 0a ]] ||
    fail "$where: redis-cli --raw GET output does not end with its newline"
  head -c -1 "$WORK/get.out" >"$WORK/get.bin"
  expect_same_file "$where: 1 MiB SET/GET" "$WORK/value.bin" "$WORK/get.bin"
  # The value crossed xsockd once each way (SET one way, GET's reply the other).
  counters "after-get-$port"
  expect_counter_grew "before-set-$port" "after-get-$port" bytes_to_host $((1024 * 1024))
  expect_counter_grew "before-set-$port" "after-get-$port" bytes_from_host $((1024 * 1024))
  rm -f "$WORK/get.out" "$WORK/get.bin"
}

# ---- 1. redis-server in the namespace, clients on the host -----------------------------
compat_start_xsockd
ROUTE="127.0.0.0/8:$ns_port"
server_cmd "$ns_port"
start_ns redis-ns "${SERVER_CMD[@]}"
redis_ns=$BG_PID
wait_listening "$ns_port" "$redis_ns"
check_clients "host -> namespace server" on_host "$ns_port" "$WORK/redis-ns.log"
kill -0 "$redis_ns" 2>/dev/null || fail_with_logs "redis-server in the namespace died" "$WORK/redis-ns.log"
stop_bg "$redis_ns"

# ---- 2. redis-server on the host, clients in the namespace -----------------------------
server_cmd "$host_port"
start_host redis-host "${SERVER_CMD[@]}"
redis_host=$BG_PID
wait_listening "$host_port" "$redis_host"
ROUTE='127.0.0.0/8'
check_clients "namespace -> host server" in_ns "$host_port" "$WORK/redis-host.log"
stop_bg "$redis_host"
log "PASS"
