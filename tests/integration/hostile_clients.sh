#!/usr/bin/env bash
# Hostile clients cost only their own sockets (issue 5, item 5). While a well-behaved
# routed client streams 64 MiB transfers back to back through xsockd with the hash checked
# (none may stall for more than 15 s), xsock-hostile-client runs every misbehaviour against the same
# xsockd, five rounds: garbage packets, impossible ring indices, indices flipping while
# data flows, oversized lengths and ring orders, a client that never reads, clients that
# die mid-call, 2000 sockets left open at exit. Afterwards: the good transfer succeeded,
# xsockd is alive and serves a new client, its descriptors, sockets_now and clients_now
# are back at the baseline and its RSS within 8 MiB of it (the allocator keeps some freed
# memory), and its log names the protocol errors and the corrupt rings it cut off.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
ROUTE=127.0.0.0/8
[[ -x ${HOSTILE_CLIENT:-} ]] || fail "HOSTILE_CLIENT is not set to xsock-hostile-client"

start_xsockd
start_echo_server --bind 127.0.0.1

fds() { find "/proc/$XSOCKD_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$XSOCKD_PID/status"; }

routed timeout 30 "$STREAM_CHECK" --mode poll --bytes 1M 127.0.0.1 "$ECHO_PORT" >"$WORK/warm.out" 2>&1 ||
  { show_file warm-up "$WORK/warm.out"; fail "the warm-up transfer failed"; }
sleep 0.2
stats_snapshot "$WORK/base"
base_fds=$(fds)
base_rss=$(rss_kib)
log "baseline: $base_fds descriptors, RSS $base_rss KiB"

# The good client: 64 MiB transfers back to back (each its own routed process) until the
# hostile rounds are over (at most 2000, a bound only); the first failure ends the loop
# with its status.
(
  for ((n = 1; n <= 2000; n++)); do
    [[ -e $WORK/hostile-done && $n -gt 2 ]] && break
    routed timeout -k 2 60 "$STREAM_CHECK" --mode epoll-et --bytes 64M --stall-timeout 15 \
      --timeout 50 --seed "$n" 127.0.0.1 "$ECHO_PORT" >"$WORK/good-last.out" 2>&1 || exit $?
    echo "transfer $n ok" >>"$WORK/good.out"
  done
  exit 0
) &
good=$!
BACKGROUND_PIDS+=("$good")

modes=(garbage bad-indices flipping-indices oversized stop-reading die-mid-call many-sockets)
for round in 1 2 3 4 5; do
  for m in "${modes[@]}"; do
    timeout -k 2 60 "$HOSTILE_CLIENT" --mode "$m" --socket "$SOCK" --echo-port "$ECHO_PORT" \
      --duration-ms 1500 --seed "$round" >"$WORK/hostile-$m-$round.out" 2>&1
    rc=$?
    [[ $rc -eq 0 ]] || { show_file "hostile $m" "$WORK/hostile-$m-$round.out"; fail "xsock-hostile-client --mode $m could not carry out its misbehaviour (exit $rc)"; }
    kill -0 "$XSOCKD_PID" 2>/dev/null || fail "xsockd died during hostile mode $m"
  done
  log "round $round: ${modes[*]} done"
done

touch "$WORK/hostile-done"
wait "$good"
rc=$?
cat "$WORK/good-last.out"
expect_status "the well-behaved 64 MiB transfers beside the hostile clients" 0 "$rc" "$WORK/good-last.out"
good_n=$(grep -c "ok$" "$WORK/good.out")
log "the good client completed $good_n hash-checked 64 MiB transfers while the hostile clients ran"
[[ $good_n -ge 2 ]] || fail "the good client did not overlap the hostile rounds"

# A new client is served normally.
routed timeout 30 "$STREAM_CHECK" --mode threads --bytes 4M 127.0.0.1 "$ECHO_PORT" >"$WORK/after.out" 2>&1 ||
  { show_file after "$WORK/after.out"; fail "a new client after the hostile ones failed"; }

expect_sockets_released "$WORK/base"
for ((i = 0; i < 200; i++)); do
  stats_snapshot "$WORK/end"
  [[ $(fds) -le $base_fds && $(stat_value "$WORK/end" clients_now) -le $(stat_value "$WORK/base" clients_now) ]] && break
  sleep 0.05
done
end_fds=$(fds)
end_rss=$(rss_kib)
log "after: $end_fds descriptors (baseline $base_fds), RSS $end_rss KiB (baseline $base_rss), sockets_now $(stat_value "$WORK/end" sockets_now), clients_now $(stat_value "$WORK/end" clients_now), sockets_total $(stat_value "$WORK/end" sockets_total)"
[[ $end_fds -le $base_fds ]] || { ls -l "/proc/$XSOCKD_PID/fd" >&2; fail "xsockd holds $end_fds descriptors, $base_fds before"; }
[[ $(stat_value "$WORK/end" clients_now) -le $(stat_value "$WORK/base" clients_now) ]] ||
  fail "clients_now did not return to the baseline"
[[ $((end_rss - base_rss)) -le 8192 ]] || fail "xsockd's RSS grew from $base_rss to $end_rss KiB"
[[ $(stat_value "$WORK/end" sockets_total) -ge $(( $(stat_value "$WORK/base" sockets_total) + 2000 )) ]] ||
  fail "fewer than 2000 sockets were made: many-sockets did not test"
protocol_errors=$(grep -c 'event=protocol_error' "$XSOCKD_LOG")
corrupt=$(grep -ciE 'corrupt' "$XSOCKD_LOG")
log "xsockd log: $protocol_errors protocol_error lines, $corrupt lines about corrupt rings"
[[ $protocol_errors -ge 2 ]] || fail "xsockd did not log the garbage/oversized clients it dropped"
[[ $corrupt -ge 2 ]] || fail "xsockd did not log the sockets it reset for impossible indices"
log "PASS"
