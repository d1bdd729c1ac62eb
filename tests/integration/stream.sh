#!/usr/bin/env bash
# stream.sh MODE BYTES ADDR [--xsockd-token-delay US] [OPTION...]: xsock-stream-check
# (with the extra OPTIONs), in a network namespace with no network,
# streams BYTES to xsock-echo-server on the host through xsockd and verifies the echo
# (length, hash, content, FIN after the last byte). Also checks that the echo server saw
# exactly BYTES and a clean EOF, that xsockd's counters moved by at least BYTES each way
# with one successful connect, and that xsockd frees the socket once the client is gone.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
[[ $# -ge 3 ]] || { echo "usage: stream.sh MODE BYTES ADDR [OPTION...]"; exit 2; }
mode=$1 bytes=$2 addr=$3
shift 3
# --xsockd-token-delay US (ours, not stream-check's): xsockd sleeps US before each token
# decision (XSOCKD_TEST_TOKEN_DELAY_US), which makes the race between an app emptying the
# ring and xsockd queuing a token happen on every run instead of once in many.
if [[ ${1:-} == --xsockd-token-delay ]]; then
  export XSOCKD_TEST_TOKEN_DELAY_US=$2
  shift 2
fi
extra=("$@")

start_xsockd
start_echo_server --bind 127.0.0.1 --bind ::1 --max-clients 1

stats_snapshot "$WORK/before"
log "stream-check --mode $mode --bytes $bytes ${extra[*]} to $addr port $ECHO_PORT, in unshare -n via xsockd"
routed timeout -k 5 150 "$STREAM_CHECK" --mode "$mode" --bytes "$bytes" --timeout 140 --stall-timeout 15 \
  "${extra[@]}" "$addr" "$ECHO_PORT" >"$WORK/client.out" 2>&1
rc=$?
cat "$WORK/client.out"
expect_status "xsock-stream-check" 0 "$rc"
stats_snapshot "$WORK/after"

n=$(sed -n 's/^sent \([0-9]*\) bytes.*/\1/p' "$WORK/client.out")
[[ -n $n && $n -gt 0 ]] || fail "stream-check did not report the bytes sent"

# The echo server exits after its one client; its line says what it saw.
for ((i = 0; i < 100; i++)); do kill -0 "$ECHO_PID" 2>/dev/null || break; sleep 0.05; done
grep -q "^client 1: echoed $n bytes, eof$" "$ECHO_OUT" || {
  show_file "echo server output" "$ECHO_OUT"
  fail "echo server did not echo exactly $n bytes and see a clean EOF"
}

delta() { echo $(( $(stat_value "$WORK/after" "$1") - $(stat_value "$WORK/before" "$1") )); }
to_host=$(delta bytes_to_host) from_host=$(delta bytes_from_host) connects=$(delta connects_ok)
log "xsockd: bytes_to_host +$to_host, bytes_from_host +$from_host, connects_ok +$connects"
[[ $to_host -ge $n ]] || fail "bytes_to_host grew by $to_host, expected >= $n"
[[ $from_host -ge $n ]] || fail "bytes_from_host grew by $from_host, expected >= $n"
[[ $connects -eq 1 ]] || fail "connects_ok grew by $connects, expected 1"

# The client has exited, so xsockd must let go of its socket (bounded wait: it learns of
# the close asynchronously).
expect_sockets_released "$WORK/before"
log "PASS"
