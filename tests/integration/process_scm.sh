#!/usr/bin/env bash
# SCM_RIGHTS: xsock-process-check starts a receiver (a fresh exec of itself that never
# had the socket), connects through xsockd, passes the routed descriptor over a
# socketpair with SCM_RIGHTS and closes its own copy. The receiver's recvmsg adopts it
# (attach through xsockd) and streams 2 MiB with every byte of the echo verified.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
[[ -n ${PROCESS_CHECK:-} && -f $PROCESS_CHECK ]] || fail "\$PROCESS_CHECK is not set (run through meson test)"

start_xsockd
start_echo_server --bind 127.0.0.1 --max-clients 1
stats_snapshot "$WORK/before"

bytes=$((2 << 20))
log "SCM_RIGHTS check, $bytes bytes, in unshare -n via xsockd"
routed timeout -k 5 40 "$PROCESS_CHECK" scm 127.0.0.1 "$ECHO_PORT" "$bytes" >"$WORK/out" 2>&1
rc=$?
cat "$WORK/out"
expect_status "xsock-process-check scm" 0 "$rc" "$WORK/out"
grep -q "^ok receiver: $bytes bytes echoed and verified on the received socket$" "$WORK/out" ||
  fail "the receiver did not verify the echo"
for ((i = 0; i < 100; i++)); do kill -0 "$ECHO_PID" 2>/dev/null || break; sleep 0.05; done
grep -q "^client 1: echoed $bytes bytes, eof$" "$ECHO_OUT" || {
  show_file "echo server output" "$ECHO_OUT"
  fail "echo server did not echo exactly $bytes bytes and see a clean EOF"
}
expect_sockets_released "$WORK/before"
log "PASS"
