#!/usr/bin/env bash
# Clients killed with SIGKILL mid-transfer cost xsockd nothing that outlives them (issue 5,
# "hostile and crashing clients"): 30 rounds, each starting 4 routed transfers (several
# sockets each: 2 concurrent streams per client via separate processes) and kill -9 at a
# random point while bytes flow. Meanwhile a well-behaved client transfers 64 MiB with
# its hash checked, which must succeed. Afterwards xsockd's open descriptors, its sockets
# and clients counters and its RSS return to the baseline taken before the first round
# (RSS within 4 MiB: the allocator keeps some freed memory).
source "$(dirname "$0")/lib.sh"
require_root_and_netns
ROUTE=127.0.0.0/8

start_xsockd
start_echo_server --bind 127.0.0.1 --max-clients 64

fds() { find "/proc/$XSOCKD_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$XSOCKD_PID/status"; }

# A first routed connection, so that lazily created state (resolver, pools) exists in
# the baseline.
routed timeout 30 "$STREAM_CHECK" --mode poll --bytes 1M 127.0.0.1 "$ECHO_PORT" >"$WORK/warm.out" 2>&1 ||
  { show_file warm-up "$WORK/warm.out"; fail "the warm-up transfer failed"; }
sleep 0.2
stats_snapshot "$WORK/base"
base_fds=$(fds)
base_rss=$(rss_kib)
log "baseline: $base_fds descriptors, RSS $base_rss KiB, sockets_now $(stat_value "$WORK/base" sockets_now)"

routed timeout -k 2 120 "$STREAM_CHECK" --mode epoll-et --bytes 64M --stall-timeout 20 \
  127.0.0.1 "$ECHO_PORT" >"$WORK/good.out" 2>&1 &
good=$!
BACKGROUND_PIDS+=("$good")

rounds=30
for ((r = 1; r <= rounds; r++)); do
  victims=()
  for ((v = 0; v < 4; v++)); do
    # No timeout(1) in between (killing it would leave its child running): unshare and
    # env exec, so the subshell's only child is stream-check, bounded by its --timeout.
    routed "$STREAM_CHECK" --mode threads --bytes 1G --timeout 60 --seed $((r * 10 + v)) \
      127.0.0.1 "$ECHO_PORT" >/dev/null 2>&1 &
    victims+=("$!")
  done
  sleep "0.$((RANDOM % 3 + 1))"
  for pid in "${victims[@]}"; do
    pkill -KILL -P "$pid" 2>/dev/null  # stream-check, mid-transfer
    kill -KILL "$pid" 2>/dev/null
  done
  for pid in "${victims[@]}"; do wait "$pid" 2>/dev/null; done
done
log "$rounds rounds of 4 clients killed mid-transfer"

wait "$good"
rc=$?
cat "$WORK/good.out"
expect_status "the well-behaved 64 MiB transfer beside the killed clients" 0 "$rc" "$WORK/good.out"

expect_sockets_released "$WORK/base"
for ((i = 0; i < 100; i++)); do
  stats_snapshot "$WORK/end"
  [[ $(fds) -le $base_fds && $(stat_value "$WORK/end" clients_now) -le $(stat_value "$WORK/base" clients_now) ]] && break
  sleep 0.05
done
end_fds=$(fds)
end_rss=$(rss_kib)
log "after: $end_fds descriptors, RSS $end_rss KiB, sockets_now $(stat_value "$WORK/end" sockets_now), clients_now $(stat_value "$WORK/end" clients_now), sockets_total $(stat_value "$WORK/end" sockets_total)"
[[ $end_fds -le $base_fds ]] || { ls -l "/proc/$XSOCKD_PID/fd" >&2; fail "xsockd holds $end_fds descriptors, $base_fds before"; }
[[ $(stat_value "$WORK/end" clients_now) -le $(stat_value "$WORK/base" clients_now) ]] ||
  fail "clients_now did not return to the baseline"
[[ $((end_rss - base_rss)) -le 4096 ]] || fail "xsockd's RSS grew from $base_rss to $end_rss KiB"
[[ $(stat_value "$WORK/end" sockets_total) -ge $(( $(stat_value "$WORK/base" sockets_total) + rounds * 4 )) ]] ||
  fail "fewer sockets were made than clients were started: the test did not test"
log "PASS"
