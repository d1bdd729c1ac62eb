#!/usr/bin/env bash
# xsockd's access policy (--config, docs/xsockd-policy.md) against routed python3 clients
# in empty network namespaces:
#   * an allowed connect carries 256 KiB echoed back with the sha256 checked;
#   * a denied connect gets exactly the configured errno (ECONNREFUSED by default, and a
#     rule's own EHOSTUNREACH), although a server listens on both ports;
#   * a bind below 1024 gets EACCES (xsockd, as root, could bind it), port 0 still works;
#   * a rewrite sends a connect for 10.0.0.5:5432 to the host's 127.0.0.1:ECHO_PORT and
#     data flows (hash checked);
#   * xsockctl --json clients shows the denials of a live client, stats the total;
#   * SIGHUP with a new file: the denied port now works, the echo port is now denied for
#     new connects, while a connection opened before the reload keeps transferring;
#   * SIGHUP with a broken file: the log says ok=0 with the file:line, the old policy stays
#     (behaviour as after the first reload), policy_reloads/policy_reload_errors count;
#   * xsockd --check-config exit codes and output for a good and a bad file; a missing
#     --config file stops the start (exit 1).
LIB_REQUIRED="XSOCKD XSOCK_LIB XSOCK_STATS ECHO_SERVER XSOCKCTL PYTHON3"
source "$(dirname "$0")/lib.sh"
require_root_and_netns

ADMIN=$WORK/xsockd-admin.sock
CONF=$WORK/xsockd.conf
ROUTE='127.0.0.0/8,10.0.0.0/8'
ctl() { timeout 10 "$XSOCKCTL" --admin-socket "$ADMIN" "$@"; }
json_get() { "$PYTHON3" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

start_echo_server --bind 127.0.0.1
ECHO_A=$ECHO_PORT
start_echo_server --bind 127.0.0.1
ECHO_B=$ECHO_PORT
start_echo_server --bind 127.0.0.1
ECHO_C=$ECHO_PORT
log "echo servers: A $ECHO_A (allowed), B $ECHO_B (denied, default errno), C $ECHO_C (denied, EHOSTUNREACH)"

write_policy_1() {
  cat >"$CONF" <<EOF
# First policy: A allowed, B and C denied, binds below 1024 denied, 10.0.0.5:5432 -> A.
[settings]
connect_default = "allow"

[[client]]
name = "guests"
uids = [0]
apps = ["python3*"]
connect_default = "allow"
bind_default = "allow"

  [[client.connect]]
  action = "deny"
  to = "127.0.0.1"
  port = $ECHO_B

  [[client.connect]]
  action = "deny"
  to = "127.0.0.0/8"
  port = $ECHO_C
  errno = "EHOSTUNREACH"

  [[client.bind]]
  action = "deny"
  port = "1-1023"

  [[client.rewrite]]
  from = "10.0.0.5"
  port = 5432
  to = "127.0.0.1"
  to_port = $ECHO_A
EOF
}

# The second: B allowed, A denied for new connects.
write_policy_2() {
  cat >"$CONF" <<EOF
[[client]]
name = "guests2"
apps = "python3*"
connect_default = "allow"
bind_default = "allow"
  [[client.connect]]
  action = "deny"
  to = "127.0.0.1"
  port = $ECHO_A
EOF
}

# echo_check ADDR PORT BYTES: one connection, BYTES sent, the echo's sha256 compared.
# Prints "ok <sha256>" or the errno name of the connect.
cat >"$WORK/echo_check.py" <<'PY'
import errno, hashlib, os, socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket()
s.settimeout(20)
try:
    s.connect((addr, port))
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
    sys.exit(0)
data = os.urandom(n)
s.sendall(data)
s.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
want = hashlib.sha256(data).hexdigest()
have = hashlib.sha256(bytes(got)).hexdigest()
print("ok " + have if have == want and len(got) == n else "mismatch %d %s" % (len(got), have))
PY

# echo_expect WHAT ADDR PORT EXPECTED: EXPECTED is "ok" or an errno name.
echo_expect() {
  local out
  out=$(routed timeout -k 5 40 "$PYTHON3" "$WORK/echo_check.py" "$2" "$3" 262144 2>"$WORK/echo_check.err")
  if [[ $4 == ok ]]; then
    [[ $out == "ok "* ]] || { show_file stderr "$WORK/echo_check.err"; fail "$1: connect to $2:$3 gave '$out', expected the data echoed intact"; }
  else
    [[ $out == "$4" ]] || fail "$1: connect to $2:$3 gave '$out', expected $4"
  fi
  log "$1: $2:$3 -> $out"
}

# wait_log PATTERN N: until the log has at least N lines matching PATTERN (10 s).
wait_log() {
  local i
  for ((i = 0; i < 200; i++)); do
    [[ $(grep -c -- "$1" "$XSOCKD_LOG") -ge $2 ]] && return 0
    sleep 0.05
  done
  fail "no $2 log lines matching '$1' within 10 s"
}

# ---- --check-config and a missing --config file ----
write_policy_1
out=$("$XSOCKD" --check-config --config "$CONF" 2>&1)
rc=$?
[[ $rc -eq 0 ]] || fail "--check-config of a good file exited $rc: $out"
[[ $out == "$CONF: ok (1 client blocks, 4 rules)" ]] || fail "--check-config said '$out'"
cat >"$WORK/bad.conf" <<'EOF'
[[client]]
name = "x"
connect_default = "allow"
bind_default = "sometimes"
colour = 3
EOF
out=$("$XSOCKD" --check-config --config "$WORK/bad.conf" 2>&1)
rc=$?
[[ $rc -eq 1 ]] || fail "--check-config of a bad file exited $rc, expected 1"
grep -q "^$WORK/bad.conf:4:16: client 'x': 'bind_default' must be \"allow\" or \"deny\"" <<<"$out" ||
  fail "--check-config did not report bad.conf:4:16: $out"
grep -q "^$WORK/bad.conf:5:1: client 'x': unknown key 'colour'" <<<"$out" ||
  fail "--check-config did not report bad.conf:5:1: $out"
out=$("$XSOCKD" --check-config --config "$WORK/missing.conf" 2>&1)
[[ $? -eq 1 && $out == *"cannot read: ENOENT"* ]] || fail "--check-config of a missing file: '$out'"
timeout 10 "$XSOCKD" --socket "$WORK/other.sock" --config "$WORK/missing.conf" >"$WORK/missing.out" 2>&1
rc=$?
[[ $rc -eq 1 ]] || fail "xsockd --config MISSING exited $rc, expected 1 ($(cat "$WORK/missing.out"))"
[[ ! -e $WORK/other.sock ]] || fail "xsockd --config MISSING left a socket file"
log "--check-config: good 0, bad 1 with file:line, missing 1; xsockd --config MISSING: 1"

# ---- the first policy ----
start_xsockd --config "$CONF"
grep -q "event=policy_loaded file=$CONF clients=1 rules=4" "$XSOCKD_LOG" || fail "no policy_loaded line"

echo_expect "allowed" 127.0.0.1 "$ECHO_A" ok
echo_expect "denied (default errno)" 127.0.0.1 "$ECHO_B" ECONNREFUSED
echo_expect "denied (rule errno)" 127.0.0.1 "$ECHO_C" EHOSTUNREACH
echo_expect "rewritten 10.0.0.5:5432" 10.0.0.5 5432 ok
grep -q "event=rewrite op=connect .*dest=10.0.0.5:5432 to=127.0.0.1:$ECHO_A rule=guests#rewrite1" \
  "$XSOCKD_LOG" || fail "no rewrite log line"
grep -q "event=deny op=connect client=[0-9]* uid=0 pid=[0-9]* exe=[^ ]*python3[^ ]* socket=[0-9]* dest=127.0.0.1:$ECHO_B rule=guests#1 errno=ECONNREFUSED" \
  "$XSOCKD_LOG" || fail "no deny log line for B"
# Not a python3 client: no block matches, [settings] allows (C is served).
out=$(routed timeout -k 5 20 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ECHO_C && echo connected" 2>&1)
[[ $out == connected ]] || fail "a non-python client was not allowed to C: $out"

# A live client: a denied bind below 1024, an allowed one on port 0, a denied connect;
# then it waits, so that xsockctl shows its denials.
cat >"$WORK/binder.py" <<'PY'
import errno, socket, sys
def name(e): return errno.errorcode.get(e.errno, str(e.errno))
s = socket.socket()
try:
    s.bind(("127.0.0.1", 80)); print("bind80 ok")
except OSError as e:
    print("bind80", name(e))
t = socket.socket()
t.bind(("127.0.0.1", 0)); t.listen(1); print("bind0 ok", t.getsockname()[1])
c = socket.socket()
try:
    c.connect(("127.0.0.1", int(sys.argv[1]))); print("connectB ok")
except OSError as e:
    print("connectB", name(e))
print("ready", flush=True)
sys.stdin.read()
PY
mkfifo "$WORK/binder.in"
routed "$PYTHON3" -u "$WORK/binder.py" "$ECHO_B" <"$WORK/binder.in" >"$WORK/binder.out" 2>&1 &
BACKGROUND_PIDS+=($!)
exec 7>"$WORK/binder.in"
for ((i = 0; i < 200; i++)); do grep -q '^ready' "$WORK/binder.out" && break; sleep 0.05; done
grep -q '^ready' "$WORK/binder.out" || { show_file binder "$WORK/binder.out"; fail "binder did not finish"; }
grep -qx 'bind80 EACCES' "$WORK/binder.out" || { show_file binder "$WORK/binder.out"; fail "bind below 1024 was not EACCES"; }
grep -q '^bind0 ok [0-9]' "$WORK/binder.out" || { show_file binder "$WORK/binder.out"; fail "bind to port 0 failed"; }
grep -qx 'connectB ECONNREFUSED' "$WORK/binder.out" || { show_file binder "$WORK/binder.out"; fail "connect to B was not ECONNREFUSED"; }
grep -q "event=deny op=bind .*dest=127.0.0.1:80 rule=guests#1 errno=EACCES" "$XSOCKD_LOG" ||
  fail "no deny log line for the bind"
ctl --json clients >"$WORK/clients.json" || fail "xsockctl --json clients failed"
denials=$(json_get "$WORK/clients.json" "[c['denials'] for c in j if 'python3' in c['exe']]")
[[ $denials == "[2]" ]] || fail "the live client's denials are $denials, expected [2]"
ctl --json stats >"$WORK/stats.json" || fail "xsockctl --json stats failed"
# B, C, the binder's bind and its connect.
[[ $(json_get "$WORK/stats.json" "j['denials']") == 4 ]] ||
  fail "stats denials $(json_get "$WORK/stats.json" "j['denials']"), expected 4"
exec 7>&-
log "denials: live client 2, total 4; bind 80 EACCES, bind 0 ok"

# ---- reload while a connection is open ----
cat >"$WORK/holder.py" <<'PY'
import hashlib, os, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
def round_trip(n):
    data = os.urandom(n)
    s.sendall(data)
    got = bytearray()
    while len(got) < n:
        b = s.recv(65536)
        if not b: raise SystemExit("eof after %d" % len(got))
        got += b
    return hashlib.sha256(data).digest() == hashlib.sha256(bytes(got)).digest()
print("round1", "ok" if round_trip(1 << 16) else "mismatch", flush=True)
sys.stdin.readline()
print("round2", "ok" if round_trip(1 << 20) else "mismatch", flush=True)
PY
mkfifo "$WORK/holder.in"
routed "$PYTHON3" -u "$WORK/holder.py" "$ECHO_A" <"$WORK/holder.in" >"$WORK/holder.out" 2>&1 &
HOLDER=$!
BACKGROUND_PIDS+=($HOLDER)
exec 8>"$WORK/holder.in"
for ((i = 0; i < 200; i++)); do grep -q '^round1' "$WORK/holder.out" && break; sleep 0.05; done
grep -qx 'round1 ok' "$WORK/holder.out" || { show_file holder "$WORK/holder.out"; fail "holder's first round trip"; }

write_policy_2
kill -HUP "$XSOCKD_PID"
wait_log "event=policy_reload ok=1 file=$CONF clients=1 rules=1" 1
echo_expect "after reload, B allowed" 127.0.0.1 "$ECHO_B" ok
echo_expect "after reload, A denied for new connects" 127.0.0.1 "$ECHO_A" ECONNREFUSED
grep -q "event=deny op=connect .*dest=127.0.0.1:$ECHO_A rule=guests2#1" "$XSOCKD_LOG" ||
  fail "no deny line naming the new policy's rule"
echo go >&8
for ((i = 0; i < 400; i++)); do grep -q '^round2' "$WORK/holder.out" && break; sleep 0.05; done
grep -qx 'round2 ok' "$WORK/holder.out" || { show_file holder "$WORK/holder.out"; fail "the connection opened before the reload did not keep transferring"; }
exec 8>&-
wait "$HOLDER" || fail "holder exited with $?"
log "reload: B now allowed, A denied for new connects, the held connection moved 1 MiB more"

# ---- a broken file: the old (second) policy stays ----
cat >"$CONF" <<'EOF'
[[client]]
name = "broken"
connect_default = "deny"
EOF
kill -HUP "$XSOCKD_PID"
wait_log "event=policy_reload ok=0" 1
grep "event=policy_reload ok=0" "$XSOCKD_LOG" | grep -q "level=warn .*$CONF:1:1: client 'broken': missing 'bind_default'" ||
  fail "the ok=0 line does not name $CONF:1:1"
echo_expect "after a bad reload, B still allowed" 127.0.0.1 "$ECHO_B" ok
echo_expect "after a bad reload, A still denied" 127.0.0.1 "$ECHO_A" ECONNREFUSED
ctl --json stats >"$WORK/stats.json" || fail "xsockctl --json stats failed"
[[ $(json_get "$WORK/stats.json" "j['policy_reloads'], j['policy_reload_errors']") == "1 1" ]] ||
  fail "policy_reloads/errors are $(json_get "$WORK/stats.json" "j['policy_reloads'], j['policy_reload_errors']"), expected 1 1"
[[ $(json_get "$WORK/stats.json" "j['denials']") == 6 ]] ||
  fail "stats denials $(json_get "$WORK/stats.json" "j['denials']"), expected 6"
log "bad reload: old policy kept, policy_reloads 1, policy_reload_errors 1, denials 6"

kill -0 "$XSOCKD_PID" 2>/dev/null || fail "xsockd is gone"
stop_xsockd
log "PASS"
