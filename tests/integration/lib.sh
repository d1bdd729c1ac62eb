# Shared helpers for the integration tests; each test script sources this file.
#
# meson passes the programs under test in the environment:
#   XSOCKD XSOCK_LIB XSOCK_STATS ECHO_SERVER STREAM_CHECK CONNECT_CHECK PYTHON3
# Every test gets a private work directory (xsockd's socket and log, servers' output),
# removed on every exit path together with every process the test started. On failure,
# `fail` prints the reason and the end of xsockd's log.
#
# Conventions: helpers never rely on `set -e`; every wait is bounded; commands that talk
# to xsockd run under `timeout` so a hang turns into a failure with a reason.

set -uo pipefail

TEST_NAME=$(basename "$0" .sh)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/xsock-it-$TEST_NAME.XXXXXX") || exit 1
SOCK=$WORK/xsockd.sock
XSOCKD_LOG=$WORK/xsockd.log
XSOCKD_PID=
# Destinations the preload routes to xsockd unless a test says otherwise.
ROUTE='127.0.0.0/8,[::1]/128'
BACKGROUND_PIDS=()

# A test that needs only some of the programs sets LIB_REQUIRED before sourcing this file.
for var in ${LIB_REQUIRED:-XSOCKD XSOCK_LIB XSOCK_STATS ECHO_SERVER STREAM_CHECK CONNECT_CHECK PYTHON3}; do
  if [[ -z ${!var:-} || ! -f ${!var} ]]; then
    echo "$TEST_NAME: \$$var does not name a file (run this through meson test)" >&2
    exit 1
  fi
done

log() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*"; }

# Prints the last lines of xsockd's log, if any.
show_xsockd_log() {
  if [[ -s $XSOCKD_LOG ]]; then
    echo "---- xsockd log ($XSOCKD_LOG, last 60 lines) ----"
    tail -n 60 "$XSOCKD_LOG"
    echo "---- end of xsockd log ----"
  else
    echo "(xsockd log is empty)"
  fi
}

# fail REASON...: report and exit 1 (the EXIT trap cleans up).
fail() {
  echo "FAIL: $TEST_NAME: $*"
  if [[ -n $XSOCKD_PID ]] && kill -0 "$XSOCKD_PID" 2>/dev/null; then
    echo "---- xsockd's counters now ----"
    timeout 5 "$XSOCK_STATS" --socket "$SOCK" --timeout 2 2>&1 | tr '\n' ' '
    echo
  fi
  show_xsockd_log
  exit 1
}

# show_file LABEL FILE: print a captured output file, for diagnostics.
show_file() {
  echo "---- $1 ----"
  cat "$2" 2>/dev/null
  echo "---- end of $1 ----"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  # Grouped so that bash's "Killed" job notices go nowhere.
  for pid in "${BACKGROUND_PIDS[@]}" $XSOCKD_PID; do
    { kill -KILL "$pid" && wait "$pid"; } 2>/dev/null
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
# meson's timeout and ^C arrive as signals: exit so that the EXIT trap runs.
trap 'echo "$TEST_NAME: interrupted"; show_xsockd_log; exit 130' INT TERM

require_root_and_netns() {
  if [[ $(id -u) -ne 0 ]]; then
    echo "$TEST_NAME: needs root (unshare -n, LD_PRELOAD of routed programs)"
    exit 77
  fi
  if ! unshare -n true 2>/dev/null; then
    echo "$TEST_NAME: unshare -n does not work here"
    exit 77
  fi
}

# start_xsockd [ARGS...]: starts xsockd on $SOCK, logging to $XSOCKD_LOG, and waits (at
# most 10 s) until it answers a stats request. A socket file left by an earlier xsockd is
# removed first, unless KEEP_STALE_SOCKET=1 (then xsockd must cope with it).
start_xsockd() {
  [[ ${KEEP_STALE_SOCKET:-0} == 1 ]] || rm -f "$SOCK"
  echo "==== xsockd start $(date +%T.%3N): $XSOCKD --socket $SOCK $*" >>"$XSOCKD_LOG"
  "$XSOCKD" --socket "$SOCK" "$@" >>"$XSOCKD_LOG" 2>&1 &
  XSOCKD_PID=$!
  local i
  for ((i = 0; i < 200; i++)); do
    if ! kill -0 "$XSOCKD_PID" 2>/dev/null; then
      wait "$XSOCKD_PID"
      local rc=$?
      XSOCKD_PID=
      fail "xsockd exited with status $rc during start-up"
    fi
    if [[ -S $SOCK ]] && timeout 5 "$XSOCK_STATS" --socket "$SOCK" --timeout 2 >/dev/null 2>&1
    then
      log "xsockd running, pid $XSOCKD_PID, socket $SOCK"
      return 0
    fi
    sleep 0.05
  done
  fail "xsockd (pid $XSOCKD_PID) did not answer on $SOCK within 10 s"
}

# stop_xsockd: SIGTERM, then SIGKILL if it is still there after 5 s.
stop_xsockd() {
  [[ -n $XSOCKD_PID ]] || return 0
  kill -TERM "$XSOCKD_PID" 2>/dev/null
  local i
  for ((i = 0; i < 100; i++)); do
    kill -0 "$XSOCKD_PID" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$XSOCKD_PID" 2>/dev/null; then
    log "xsockd did not exit within 5 s of SIGTERM; killing it"
    kill -KILL "$XSOCKD_PID" 2>/dev/null
  fi
  wait "$XSOCKD_PID" 2>/dev/null
  XSOCKD_PID=
}

# kill_xsockd: SIGKILL, as a crash would.
kill_xsockd() {
  [[ -n $XSOCKD_PID ]] || return 0
  { kill -KILL "$XSOCKD_PID" && wait "$XSOCKD_PID"; } 2>/dev/null
  echo "==== xsockd killed with SIGKILL $(date +%T.%3N)" >>"$XSOCKD_LOG"
  XSOCKD_PID=
}

# stats_snapshot FILE: writes xsockd's counters ("name value" lines) to FILE.
stats_snapshot() {
  timeout 10 "$XSOCK_STATS" --socket "$SOCK" >"$1" 2>"$WORK/stats.err" ||
    fail "xsock-stats failed: $(cat "$WORK/stats.err")"
}

# stat_value FILE NAME: prints one counter from a snapshot.
stat_value() {
  local v
  v=$(awk -v n="$2" '$1 == n { print $2 }' "$1")
  [[ -n $v ]] || fail "counter '$2' missing from stats: $(tr '\n' ' ' <"$1")"
  echo "$v"
}

# routed CMD...: runs CMD in a new network namespace with nothing in it (not even an up
# loopback), with libxsock.so preloaded: any connection that works went through xsockd.
routed() {
  unshare -n -- env LD_PRELOAD="$XSOCK_LIB" XSOCK_SOCKET="$SOCK" XSOCK_ROUTE="$ROUTE" "$@"
}

# preloaded CMD...: the same in the host's network namespace.
preloaded() {
  env LD_PRELOAD="$XSOCK_LIB" XSOCK_SOCKET="$SOCK" XSOCK_ROUTE="$ROUTE" "$@"
}

# start_echo_server [ARGS...]: starts xsock-echo-server (default 127.0.0.1, any port) in
# the host namespace and sets ECHO_PORT, ECHO_PID and ECHO_OUT.
start_echo_server() {
  ECHO_OUT=$WORK/echo-server.$RANDOM.out
  "$ECHO_SERVER" "$@" >"$ECHO_OUT" 2>&1 &
  ECHO_PID=$!
  BACKGROUND_PIDS+=("$ECHO_PID")
  ECHO_PORT=
  local i
  for ((i = 0; i < 100; i++)); do
    ECHO_PORT=$(head -n 1 "$ECHO_OUT" 2>/dev/null)
    [[ $ECHO_PORT =~ ^[0-9]+$ ]] && { log "echo server pid $ECHO_PID on port $ECHO_PORT ($*)"; return 0; }
    kill -0 "$ECHO_PID" 2>/dev/null || break
    sleep 0.05
  done
  show_file "echo server output" "$ECHO_OUT"
  fail "echo server did not report its port"
}

# closed_port: prints a loopback TCP port that nothing listens on (the kernel chose it
# for a listener that is gone again).
closed_port() {
  "$PYTHON3" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# expect_status WHAT EXPECTED ACTUAL [OUTPUT_FILE]: fails unless ACTUAL == EXPECTED.
expect_status() {
  if [[ $3 -ne $2 ]]; then
    [[ -n ${4:-} ]] && show_file "output of $1" "$4"
    [[ $3 -eq 124 ]] && fail "$1 timed out (exit 124)"
    fail "$1 exited with status $3, expected $2"
  fi
}

# expect_sockets_released BEFORE_SNAPSHOT: fails unless xsockd's sockets_now falls back to
# what it was in BEFORE_SNAPSHOT within 5 s (the clients have exited: their sockets must
# be flushed and freed, not leaked).
expect_sockets_released() {
  local base i
  base=$(stat_value "$1" sockets_now)
  for ((i = 0; i < 100; i++)); do
    stats_snapshot "$WORK/end"
    [[ $(stat_value "$WORK/end" sockets_now) -le $base ]] && return 0
    sleep 0.05
  done
  fail "sockets_now is $(stat_value "$WORK/end" sockets_now) 5 s after the clients exited, was $base before"
}
