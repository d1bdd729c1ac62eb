#!/usr/bin/env bash
# fork: xsock-process-check connects through xsockd (in a network namespace with no
# network), forks; the parent sends the first half of 4 MiB and closes its descriptor, the
# child (which closed its inherited number and kept a dup) sends the second half, reads
# the whole echo back and verifies it byte for byte, then sees the server's FIN. Also
# checks that the echo server saw exactly 4 MiB and a clean EOF, and that xsockd frees the
# socket once both processes are done with it.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
[[ -n ${PROCESS_CHECK:-} && -f $PROCESS_CHECK ]] || fail "\$PROCESS_CHECK is not set (run through meson test)"

start_xsockd
start_echo_server --bind 127.0.0.1 --max-clients 1
stats_snapshot "$WORK/before"

bytes=$((4 << 20))
log "fork check, $bytes bytes, in unshare -n via xsockd"
routed timeout -k 5 50 "$PROCESS_CHECK" fork 127.0.0.1 "$ECHO_PORT" "$bytes" >"$WORK/out" 2>&1
rc=$?
cat "$WORK/out"
expect_status "xsock-process-check fork" 0 "$rc" "$WORK/out"
grep -q '^ok child: sent 2097152, received and verified 4194304 bytes, then EOF$' "$WORK/out" ||
  fail "the child did not verify the whole echo"
grep -q '^ok parent:' "$WORK/out" || fail "the parent did not finish"

for ((i = 0; i < 100; i++)); do kill -0 "$ECHO_PID" 2>/dev/null || break; sleep 0.05; done
grep -q "^client 1: echoed $bytes bytes, eof$" "$ECHO_OUT" || {
  show_file "echo server output" "$ECHO_OUT"
  fail "echo server did not echo exactly $bytes bytes and see a clean EOF"
}
expect_sockets_released "$WORK/before"
log "PASS"
