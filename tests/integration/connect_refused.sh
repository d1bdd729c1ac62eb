#!/usr/bin/env bash
# Errors of routed connects reach the application as a kernel socket would report them.
#  1. A closed port on the host, through xsockd from unshare -n: ECONNREFUSED from a
#     blocking connect and from a nonblocking one (EINPROGRESS, POLLOUT, SO_ERROR), IPv4
#     and IPv6; the refused socket polls readable and writable; xsockd counts each as a
#     failed connect; nothing on stderr.
#  2. xsockd not running: a routed connect fails with ECONNREFUSED, even though the
#     destination is listening (the library must not fall back to the kernel), and the
#     library says so in exactly one line on stderr (once per process, however many
#     connects fail).
source "$(dirname "$0")/lib.sh"
require_root_and_netns

# check_connect LABEL EXPECT_STDERR_LINES RUNNER ARGS...: runs xsock-connect-check with
# RUNNER (routed / preloaded) and checks its verdict and the number of stderr lines.
check_connect() {
  local label=$1 want_lines=$2
  shift 2
  local out=$WORK/connect.out err=$WORK/connect.err rc
  "$@" >"$out" 2>"$err"
  rc=$?
  log "$label: $(tr '\n' ' ' <"$out")(exit $rc)"
  if [[ $rc -ne 0 ]]; then
    show_file "stderr" "$err"
    expect_status "$label" 0 "$rc" "$out"
  fi
  local lines
  lines=$(wc -l <"$err")
  if [[ $lines -ne $want_lines ]]; then
    show_file "stderr of $label" "$err"
    fail "$label: $lines lines on stderr, expected $want_lines"
  fi
}

start_xsockd
port=$(closed_port)
log "closed port: $port"
stats_snapshot "$WORK/before"
check_connect "blocking connect to closed 127.0.0.1:$port" 0 \
  routed timeout 20 "$CONNECT_CHECK" --expect ECONNREFUSED 127.0.0.1 "$port"
check_connect "nonblocking connect to closed 127.0.0.1:$port" 0 \
  routed timeout 20 "$CONNECT_CHECK" --nonblocking --verbose --expect ECONNREFUSED 127.0.0.1 "$port"
check_connect "nonblocking connect to closed 127.0.0.1:$port, polled for POLLIN|POLLOUT" 0 \
  routed timeout 20 "$CONNECT_CHECK" --nonblocking --poll-in --verbose --expect ECONNREFUSED 127.0.0.1 "$port"
# docs/channel.md: a refused socket polls readable and writable, as a refused TCP socket.
grep -Eq '^poll: POLLIN\|POLLOUT' "$WORK/connect.out" ||
  fail "refused socket polled as '$(grep '^poll:' "$WORK/connect.out")', expected POLLIN|POLLOUT"
check_connect "blocking connect to closed [::1]:$port" 0 \
  routed timeout 20 "$CONNECT_CHECK" --expect ECONNREFUSED ::1 "$port"
stats_snapshot "$WORK/after"
failed=$(( $(stat_value "$WORK/after" connects_failed) - $(stat_value "$WORK/before" connects_failed) ))
ok=$(( $(stat_value "$WORK/after" connects_ok) - $(stat_value "$WORK/before" connects_ok) ))
log "xsockd: connects_failed +$failed, connects_ok +$ok"
[[ $failed -eq 4 ]] || fail "connects_failed grew by $failed, expected 4"
[[ $ok -eq 0 ]] || fail "connects_ok grew by $ok, expected 0"

# Something that does listen, to show that a working destination is still refused while
# xsockd is away (the kernel would have connected).
start_echo_server
kill_xsockd
log "xsockd killed, its socket file left behind; routed connects to the listening port $ECHO_PORT"
check_connect "3 blocking connects, no xsockd, host namespace" 1 \
  preloaded timeout 20 "$CONNECT_CHECK" --repeat 3 --expect ECONNREFUSED 127.0.0.1 "$ECHO_PORT"
grep -qi xsock "$WORK/connect.err" || fail "the stderr line does not say it comes from xsock"
log "its diagnostic: $(cat "$WORK/connect.err")"
check_connect "nonblocking connect, no xsockd, host namespace" 1 \
  preloaded timeout 20 "$CONNECT_CHECK" --nonblocking --verbose --expect ECONNREFUSED 127.0.0.1 "$ECHO_PORT"
check_connect "blocking connect, no xsockd, unshare -n" 1 \
  routed timeout 20 "$CONNECT_CHECK" --expect ECONNREFUSED 127.0.0.1 "$ECHO_PORT"
rm -f "$SOCK"
log "socket file removed"
check_connect "blocking connect, no xsockd socket file, host namespace" 1 \
  preloaded timeout 20 "$CONNECT_CHECK" --expect ECONNREFUSED 127.0.0.1 "$ECHO_PORT"
log "PASS"
