#!/usr/bin/env bash
# The test programs and xsock-stats fail when they should, on plain kernel TCP (no
# xsock involved): a check that cannot fail would prove nothing in the other tests.
LIB_REQUIRED="XSOCK_STATS ECHO_SERVER STREAM_CHECK CONNECT_CHECK PYTHON3"
source "$(dirname "$0")/lib.sh"

# expect_failure LABEL STATUS PATTERN CMD...: CMD must exit STATUS with PATTERN (ERE) in
# its output.
expect_failure() {
  local label=$1 status=$2 pattern=$3
  shift 3
  "$@" >"$WORK/out" 2>&1
  local rc=$?
  log "$label: exit $rc: $(grep -v '^progress' "$WORK/out" | head -n 3 | tr '\n' ' ')"
  expect_status "$label" "$status" "$rc" "$WORK/out"
  grep -Eq "$pattern" "$WORK/out" || { show_file "output" "$WORK/out"; fail "$label: no '$pattern' in the output"; }
}

start_echo_server --corrupt-offset 3000000
expect_failure "stream-check against an echo server that flips a bit" 1 \
  '^error: content differs at offset 3000000 ' \
  timeout 30 "$STREAM_CHECK" --bytes 8M 127.0.0.1 "$ECHO_PORT"
for mode in epoll-et poll threads; do
  timeout 30 "$STREAM_CHECK" --mode "$mode" --bytes 2M 127.0.0.1 "$ECHO_PORT" >"$WORK/out" 2>&1 ||
    { show_file output "$WORK/out"; fail "stream-check --mode $mode failed before the corrupt byte"; }
done
log "stream-check passes all modes on data before the corrupt offset"

port=$(closed_port)
expect_failure "stream-check to a closed port" 3 '^error: connect: ECONNREFUSED' \
  timeout 30 "$STREAM_CHECK" 127.0.0.1 "$port"
expect_failure "connect-check expecting ok from a closed port" 1 '^ECONNREFUSED$' \
  timeout 30 "$CONNECT_CHECK" 127.0.0.1 "$port"
expect_failure "connect-check expecting ECONNREFUSED from a listening port" 1 '^ok$' \
  timeout 30 "$CONNECT_CHECK" --nonblocking --expect ECONNREFUSED 127.0.0.1 "$ECHO_PORT"

# A peer that accepts (via the kernel's backlog) but never reads: the sender fills the
# socket buffers and stalls, so --timeout must end it with status 4.
"$PYTHON3" -c 'import socket, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True); time.sleep(60)' >"$WORK/sink.out" &
BACKGROUND_PIDS+=($!)
for ((i = 0; i < 100; i++)); do sink=$(head -n 1 "$WORK/sink.out" 2>/dev/null); [[ -n $sink ]] && break; sleep 0.05; done
expect_failure "stream-check with a peer that never reads, --timeout" 4 '^error: timeout after 1 s' \
  timeout 30 "$STREAM_CHECK" --bytes 1G --timeout 1 127.0.0.1 "$sink"
expect_failure "stream-check with a peer that never reads, --stall-timeout" 4 \
  '^error: no progress for 2 s' \
  timeout 30 "$STREAM_CHECK" --bytes 1G --timeout 0 --stall-timeout 2 127.0.0.1 "$sink"

expect_failure "xsock-stats without xsockd" 1 "xsock-stats: cannot connect to xsockd at $WORK/none.sock: ENOENT" \
  timeout 30 "$XSOCK_STATS" --socket "$WORK/none.sock"
expect_failure "xsock-stats with a bad option" 2 'usage: xsock-stats' \
  timeout 30 "$XSOCK_STATS" --bogus
log "PASS"
