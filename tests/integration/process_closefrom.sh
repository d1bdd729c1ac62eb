#!/usr/bin/env bash
# closefrom / close_range in the middle of a session (OpenSSH calls both): with a routed
# socket A open, closefrom(A+1) and then close_range(B, ~0) close the application's
# descriptors but neither A nor the library's control connection (a high descriptor the
# hooks step around); new routed connections work after each. Then the control
# connection is closed with a raw system call (no hook sees it) and its number reused by
# a pipe: the library must notice, reconnect, and never write into the pipe.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
[[ -n ${PROCESS_CHECK:-} && -f $PROCESS_CHECK ]] || fail "\$PROCESS_CHECK is not set (run through meson test)"

start_xsockd
start_echo_server --bind 127.0.0.1
stats_snapshot "$WORK/before"

log "closefrom check in unshare -n via xsockd"
routed timeout -k 5 40 "$PROCESS_CHECK" closefrom 127.0.0.1 "$ECHO_PORT" >"$WORK/out" 2>&1
rc=$?
cat "$WORK/out"
expect_status "xsock-process-check closefrom" 0 "$rc" "$WORK/out"
for what in 'ok closefrom' 'ok close_range' 'ok raw close of the control connection'; do
  grep -q "^$what" "$WORK/out" || fail "missing '$what'"
done
ctl=$(sed -n 's/^control descriptor at \([0-9]*\)$/\1/p' "$WORK/out")
[[ -n $ctl && $ctl -ge 64 ]] || fail "the control connection is at descriptor '$ctl', expected a high number"
expect_sockets_released "$WORK/before"
log "PASS"
