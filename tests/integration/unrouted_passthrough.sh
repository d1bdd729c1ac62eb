#!/usr/bin/env bash
# With the preload in the host namespace and XSOCK_ROUTE=127.0.0.2/32, a connection to
# 127.0.0.1 goes through libc and the kernel, untouched: it works and xsockd's counters do
# not move. The same transfer to 127.0.0.2 does go through xsockd. Neither prints anything
# on stderr.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
ROUTE='127.0.0.2/32'
bytes=64M

start_xsockd
start_echo_server --bind 127.0.0.1 --bind 127.0.0.2

# stream_to ADDR: one verified transfer with the preload, in the host namespace.
stream_to() {
  preloaded timeout -k 2 60 "$STREAM_CHECK" --mode epoll-et --bytes "$bytes" --timeout 50 --stall-timeout 15 \
    "$1" "$ECHO_PORT" >"$WORK/client.out" 2>"$WORK/client.err"
  local rc=$?
  cat "$WORK/client.out"
  expect_status "xsock-stream-check to $1" 0 "$rc"
  [[ -s $WORK/client.err ]] && { show_file "stderr" "$WORK/client.err"; fail "stderr is not empty"; }
  return 0
}

counters=(sockets_total connects_ok connects_failed bytes_to_host bytes_from_host)

stats_snapshot "$WORK/s0"
log "to 127.0.0.1 (not in XSOCK_ROUTE=$ROUTE)"
stream_to 127.0.0.1
stats_snapshot "$WORK/s1"
for c in "${counters[@]}"; do
  a=$(stat_value "$WORK/s0" "$c") b=$(stat_value "$WORK/s1" "$c")
  [[ $a -eq $b ]] || fail "$c changed from $a to $b for an unrouted destination"
done
log "xsockd counters unchanged"

log "to 127.0.0.2 (in XSOCK_ROUTE)"
stream_to 127.0.0.2
stats_snapshot "$WORK/s2"
delta() { echo $(( $(stat_value "$WORK/s2" "$1") - $(stat_value "$WORK/s1" "$1") )); }
n=$((64 << 20))
log "xsockd: sockets_total +$(delta sockets_total), connects_ok +$(delta connects_ok)," \
  "bytes_to_host +$(delta bytes_to_host), bytes_from_host +$(delta bytes_from_host)"
[[ $(delta sockets_total) -eq 1 ]] || fail "sockets_total grew by $(delta sockets_total), expected 1"
[[ $(delta connects_ok) -eq 1 ]] || fail "connects_ok grew by $(delta connects_ok), expected 1"
[[ $(delta bytes_to_host) -ge $n ]] || fail "bytes_to_host grew by $(delta bytes_to_host), expected >= $n"
[[ $(delta bytes_from_host) -ge $n ]] || fail "bytes_from_host grew by $(delta bytes_from_host), expected >= $n"
log "PASS"
