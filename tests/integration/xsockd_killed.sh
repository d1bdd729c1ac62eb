#!/usr/bin/env bash
# xsockd is killed with SIGKILL in the middle of a transfer. The client (in unshare -n,
# routed through xsockd) must fail promptly with ECONNRESET or EPIPE (exit 3 of
# xsock-stream-check) instead of hanging; `timeout` bounds it and must not fire. Then a
# new xsockd, started on the same socket path, serves a new client.
source "$(dirname "$0")/lib.sh"
require_root_and_netns

start_xsockd
start_echo_server

# Far more bytes than can move before the kill; --progress shows that bytes are flowing.
log "starting a long transfer"
routed timeout -k 2 60 "$STREAM_CHECK" --mode epoll-et --bytes 64G --timeout 55 \
  --progress 4M 127.0.0.1 "$ECHO_PORT" >"$WORK/client.out" 2>&1 &
client=$!
BACKGROUND_PIDS+=("$client")

received=0
for ((i = 0; i < 300; i++)); do
  received=$(sed -n 's/^progress: received \([0-9]*\)$/\1/p' "$WORK/client.out" | tail -n 1)
  [[ -n $received && $received -ge $((32 << 20)) ]] && break
  kill -0 "$client" 2>/dev/null || { show_file "client output" "$WORK/client.out"; fail "client ended before the kill"; }
  sleep 0.1
done
[[ -n $received && $received -ge $((32 << 20)) ]] || {
  show_file "client output" "$WORK/client.out"
  fail "the transfer did not reach 32 MiB within 30 s (received ${received:-0})"
}

log "client has received $received bytes; killing xsockd (pid $XSOCKD_PID) with SIGKILL"
kill_xsockd
killed_at=$(date +%s%N)

# The client must notice within 10 s (polling, so a hang is reported, not waited out).
for ((i = 0; i < 200; i++)); do
  kill -0 "$client" 2>/dev/null || break
  sleep 0.05
done
if kill -0 "$client" 2>/dev/null; then
  show_file "client output" "$WORK/client.out"
  fail "client still running 10 s after xsockd was killed"
fi
wait "$client"
rc=$?
elapsed_ms=$(( ($(date +%s%N) - killed_at) / 1000000 ))
cat "$WORK/client.out" | grep -v '^progress:'
log "client exited with status $rc, ${elapsed_ms} ms after the kill"
expect_status "xsock-stream-check after the kill" 3 "$rc" "$WORK/client.out"
grep -Eq '^error: (send|recv): (ECONNRESET|EPIPE) ' "$WORK/client.out" ||
  fail "client failed, but not with ECONNRESET or EPIPE from send/recv"

# Restart on the same path, without removing the dead daemon's socket file first, as a
# supervisor would.
log "restarting xsockd on $SOCK (stale socket file left in place)"
[[ -S $SOCK ]] && log "stale socket file is present"
KEEP_STALE_SOCKET=1 start_xsockd
log "new client through the restarted xsockd"
routed timeout -k 2 60 "$STREAM_CHECK" --mode poll --bytes 32M --timeout 50 --stall-timeout 15 \
  127.0.0.1 "$ECHO_PORT" >"$WORK/client2.out" 2>&1
rc=$?
cat "$WORK/client2.out"
expect_status "xsock-stream-check through the restarted xsockd" 0 "$rc"
log "PASS"
