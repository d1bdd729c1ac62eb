#!/usr/bin/env bash
# A routed listener whose xsockd dies: its channel reaches end of file, which would poll
# readable for good and make an event loop spin on accept()'s error (vsftpd was seen at
# 18 % CPU). xsock-process-check listen-dead listens through xsockd with the listener in
# an epoll set; xsockd is killed; then the first accept() finds the end of the channel,
# the descriptor goes quiet (the epoll registration moves with it) and later waits behave
# as on a listener nobody connects to: EAGAIN, no events, SO_RCVTIMEO honoured.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
[[ -n ${PROCESS_CHECK:-} && -f $PROCESS_CHECK ]] || fail "\$PROCESS_CHECK is not set (run through meson test)"

start_xsockd
mkfifo "$WORK/go"
routed timeout -k 5 30 "$PROCESS_CHECK" listen-dead 127.0.0.1 <"$WORK/go" >"$WORK/out" 2>&1 &
client=$!
BACKGROUND_PIDS+=("$client")
exec 7>"$WORK/go"
for ((i = 0; i < 200; i++)); do
  grep -qx listening "$WORK/out" && break
  kill -0 "$client" 2>/dev/null || break
  sleep 0.05
done
grep -qx listening "$WORK/out" || { show_file "listen-dead output" "$WORK/out"; fail "the listener did not start"; }
log "listening through xsockd; killing xsockd"
kill_xsockd
echo go >&7
exec 7>&-
wait "$client"
rc=$?
cat "$WORK/out"
expect_status "xsock-process-check listen-dead" 0 "$rc" "$WORK/out"
expected='listening
epoll events once xsockd is gone: 1
accept: -1 EAGAIN
epoll events after accept: 0
poll 300 ms: 0 revents=0
blocking accept with SO_RCVTIMEO 200 ms: -1 EAGAIN
close: 0'
got=$(grep -v '^xsock: ' "$WORK/out")
[[ $got == "$expected" ]] || fail "listen-dead printed something else than expected:
$expected"
grep -q '^xsock: xsockd went away; listening socket [0-9]* accepts no more connections$' "$WORK/out" ||
  fail "no line on stderr saying the listener stopped"
log "PASS"
