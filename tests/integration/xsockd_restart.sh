#!/usr/bin/env bash
# xsockd restarts under a running application (issue 5, "backend restart"): one Python
# process in unshare -n (no network but xsockd's) keeps running across a SIGKILL of
# xsockd and the start of a new one on the same socket path:
#  1. an echo round trip through xsockd works (content checked);
#  2. xsockd is killed: the established socket's next send fails with EPIPE or
#     ECONNRESET, and does not hang (every call bounded by a socket timeout);
#  3. while no xsockd runs, a new connect fails with ECONNREFUSED at once;
#  4. a new xsockd starts: the same process connects again without restarting, and a
#     1 MiB echo is intact (sha256), so the library's control connection was reopened.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
ROUTE=127.0.0.0/8

start_xsockd
start_echo_server --bind 127.0.0.1 --max-clients 8
cat >"$WORK/app.py" <<'PY'
import errno, hashlib, os, socket, sys, time
port, flags = int(sys.argv[1]), sys.argv[2]
def say(*a): print(*a, flush=True)
def wait_for(name):
    for _ in range(600):
        if os.path.exists(os.path.join(flags, name)): return
        time.sleep(0.05)
    raise SystemExit("timed out waiting for " + name)
def echo(s, data):
    s.sendall(data); got = bytearray()
    while len(got) < len(data):
        b = s.recv(65536)
        if not b: raise SystemExit("EOF after %d bytes" % len(got))
        got += b
    return bytes(got)
s = socket.create_connection(("127.0.0.1", port), timeout=10)
say("1 echo", echo(s, b"hello through xsockd") == b"hello through xsockd")
open(os.path.join(flags, "ready"), "w").close(); wait_for("killed")
err = None
try:
    for _ in range(100):  # the first sends may still land in the ring
        s.send(b"x" * 65536); time.sleep(0.01)
except OSError as e:
    err = errno.errorcode.get(e.errno, str(e.errno))
say("2 old socket", err)
try:
    socket.create_connection(("127.0.0.1", port), timeout=10); say("3 connect while down ok")
except OSError as e:
    say("3 connect while down", errno.errorcode.get(e.errno, str(e.errno)))
open(os.path.join(flags, "tried"), "w").close(); wait_for("restarted")
s2 = socket.create_connection(("127.0.0.1", port), timeout=10)
data = os.urandom(1 << 20)
say("4 after restart", hashlib.sha256(echo(s2, data)).hexdigest() == hashlib.sha256(data).hexdigest())
PY
mkdir -p "$WORK/flags"
wait_flag() {
  local i
  for ((i = 0; i < 400; i++)); do [[ -e $WORK/flags/$1 ]] && return 0; sleep 0.05; done
  show_file app "$WORK/app.out"
  fail "the application did not reach '$1'"
}
routed timeout -k 2 60 "$PYTHON3" "$WORK/app.py" "$ECHO_PORT" "$WORK/flags" >"$WORK/app.out" 2>"$WORK/app.err" &
app=$!
BACKGROUND_PIDS+=("$app")
wait_flag ready
log "killing xsockd (pid $XSOCKD_PID) with SIGKILL under the running application"
kill_xsockd
touch "$WORK/flags/killed"
wait_flag tried
start_xsockd
touch "$WORK/flags/restarted"
wait "$app"
rc=$?
cat "$WORK/app.out"
expect_status "the application across the restart" 0 "$rc" "$WORK/app.err"
grep -qx '1 echo True' "$WORK/app.out" || fail "the first echo did not come back intact"
grep -qxE '2 old socket (EPIPE|ECONNRESET)' "$WORK/app.out" ||
  fail "the established socket did not fail with EPIPE/ECONNRESET after xsockd died"
grep -qx '3 connect while down ECONNREFUSED' "$WORK/app.out" ||
  fail "a connect while xsockd was down did not fail with ECONNREFUSED"
grep -qx '4 after restart True' "$WORK/app.out" ||
  fail "after the restart the same process could not connect and echo 1 MiB intact"
log "PASS"
