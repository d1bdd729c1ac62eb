#!/usr/bin/env bash
# xsockctl against a real xsockd: a python3 client in an empty network namespace holds a
# routed connection (5000 bytes sent, 7000 received) to a server on the host's 127.0.0.1;
# `xsockctl clients`, `sockets` and `stats` (text and --json, parsed with python3) show the
# client's pid, uid, executable and namespace as the kernel knows them and its socket with
# the right remote address and byte counts; the metrics endpoint serves the same counters;
# the admin socket is mode 0600 and a non-root user is refused; exit codes when xsockd is
# not there.
LIB_REQUIRED="XSOCKD XSOCK_LIB XSOCK_STATS XSOCKCTL PYTHON3"
source "$(dirname "$0")/lib.sh"
require_root_and_netns

ADMIN=$WORK/xsockd-admin.sock
ctl() { timeout 10 "$XSOCKCTL" --admin-socket "$ADMIN" "$@"; }
# json_get FILE EXPR: evaluates a python expression over the parsed JSON `j`.
json_get() { "$PYTHON3" -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

start_xsockd --metrics 0
metrics_port=$(sed -n 's/.*event=metrics_listening .*port=\([0-9]*\).*/\1/p' "$XSOCKD_LOG" | tail -n 1)
[[ $metrics_port =~ ^[0-9]+$ && $metrics_port -gt 0 ]] || fail "no metrics_listening line with a port"

# The admin socket: beside the control socket, a socket, mode 0600, root's.
[[ -S $ADMIN ]] || fail "no admin socket at $ADMIN"
mode=$(stat -c '%a %U' "$ADMIN")
[[ $mode == "600 root" ]] || fail "admin socket mode/owner is '$mode', expected '600 root'"

# Host-side server: reads 5000 bytes, sends 7000, then holds the connection until EOF.
cat >"$WORK/server.py" <<'PY'
import socket, sys
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
c, _ = l.accept()
got = 0
while got < 5000:
    b = c.recv(65536)
    if not b: sys.exit(1)
    got += len(b)
c.sendall(b"y" * 7000)
while c.recv(65536):
    pass
PY
"$PYTHON3" -u "$WORK/server.py" >"$WORK/server.out" 2>&1 &
BACKGROUND_PIDS+=($!)
port=
for ((i = 0; i < 100; i++)); do
  port=$(head -n 1 "$WORK/server.out" 2>/dev/null)
  [[ $port =~ ^[0-9]+$ ]] && break
  sleep 0.05
done
[[ $port =~ ^[0-9]+$ ]] || { show_file "server output" "$WORK/server.out"; fail "server did not start"; }

# Routed client: reports its own pid and network namespace, then holds the connection.
cat >"$WORK/client.py" <<'PY'
import os, socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"x" * 5000)
got = 0
while got < 7000:
    b = s.recv(65536)
    if not b: sys.exit(1)
    got += len(b)
print(os.getpid(), os.stat("/proc/self/ns/net").st_ino, flush=True)
sys.stdin.read()  # until the test closes our stdin
PY
mkfifo "$WORK/client.in"
routed "$PYTHON3" -u "$WORK/client.py" "$port" <"$WORK/client.in" >"$WORK/client.out" 2>&1 &
BACKGROUND_PIDS+=($!)
exec 7>"$WORK/client.in"  # keeps the client's stdin open
for ((i = 0; i < 200; i++)); do
  read -r cpid cnetns <"$WORK/client.out" 2>/dev/null
  [[ ${cpid:-} =~ ^[0-9]+$ ]] && break
  sleep 0.05
done
[[ ${cpid:-} =~ ^[0-9]+$ ]] || { show_file "client output" "$WORK/client.out"; fail "routed client did not connect"; }
host_netns=$(stat -L -c %i /proc/self/ns/net)
[[ $cnetns != "$host_netns" ]] || fail "the client runs in the host's network namespace"
want_exe=$(readlink -f "$PYTHON3")
log "routed client pid $cpid (netns $cnetns, exe $want_exe) connected to 127.0.0.1:$port"

# ---- clients ----
ctl clients >"$WORK/clients.txt" 2>"$WORK/ctl.err" || fail "xsockctl clients failed: $(cat "$WORK/ctl.err")"
show_file "xsockctl clients" "$WORK/clients.txt"
head -n 1 "$WORK/clients.txt" | grep -q '^CLIENT  *PID  *UID  *GID  *EXE ' || fail "clients header is not CLIENT PID UID GID EXE ..."
grep -E "^ *[0-9]+ +$cpid +0 +0 +$want_exe " "$WORK/clients.txt" >/dev/null ||
  fail "no clients line with pid $cpid, uid 0, gid 0, exe $want_exe"

ctl --json clients >"$WORK/clients.json" || fail "xsockctl --json clients failed"
entry="[c for c in j if c['pid'] == $cpid][0]"
[[ $(json_get "$WORK/clients.json" "$entry['uid']") == 0 ]] || fail "client uid is not 0"
[[ $(json_get "$WORK/clients.json" "$entry['exe']") == "$want_exe" ]] || fail "client exe is not $want_exe"
[[ $(json_get "$WORK/clients.json" "$entry['netns']") == "$cnetns" ]] || fail "client netns is not $cnetns"
[[ $(json_get "$WORK/clients.json" "$entry['sockets']") == 1 ]] || fail "client has not 1 socket"
[[ $(json_get "$WORK/clients.json" "$entry['to_host']") == 5000 ]] || fail "client to_host is not 5000"
[[ $(json_get "$WORK/clients.json" "$entry['from_host']") == 7000 ]] || fail "client from_host is not 7000"
[[ $(json_get "$WORK/clients.json" "$entry['denials']") == 0 ]] || fail "client denials is not 0"
client_id=$(json_get "$WORK/clients.json" "$entry['client']")
log "client id $client_id: uid 0, exe, netns, 1 socket, 5000/7000 bytes"

# ---- sockets ----
ctl sockets --client "$client_id" >"$WORK/sockets.txt" || fail "xsockctl sockets failed"
show_file "xsockctl sockets --client $client_id" "$WORK/sockets.txt"
grep -E "^ *$client_id +[0-9]+ +stream +connected +127\.0\.0\.1:[0-9]+ +127\.0\.0\.1:$port +5000 +7000 " \
  "$WORK/sockets.txt" >/dev/null || fail "no sockets line: client $client_id, connected, to 127.0.0.1:$port, 5000/7000"
ctl --json sockets --client "$client_id" >"$WORK/sockets.json" || fail "xsockctl --json sockets failed"
[[ $(json_get "$WORK/sockets.json" "len(j)") == 1 ]] || fail "not exactly one socket for client $client_id"
[[ $(json_get "$WORK/sockets.json" "j[0]['remote']") == "127.0.0.1:$port" ]] || fail "socket remote is not 127.0.0.1:$port"
[[ $(json_get "$WORK/sockets.json" "j[0]['to_host'], j[0]['from_host'], j[0]['in_fill'], j[0]['out_fill']") == "5000 7000 0 0" ]] ||
  fail "socket bytes/fill are $(json_get "$WORK/sockets.json" "j[0]")"
[[ $(json_get "$WORK/sockets.json" "j[0]['state']") == connected ]] || fail "socket is not connected"
ctl --json sockets --client 999999 >"$WORK/none.json" || fail "xsockctl sockets --client 999999 failed"
[[ $(json_get "$WORK/none.json" "len(j)") == 0 ]] || fail "sockets of an unknown client are not empty"

# ---- stats: the same counters as xsock-stats, plus lookups and denials ----
ctl stats >"$WORK/stats.txt" || fail "xsockctl stats failed"
ctl --json stats >"$WORK/stats.json" || fail "xsockctl --json stats failed"
stats_snapshot "$WORK/legacy"
for name in clients_now sockets_now sockets_total connects_ok bytes_to_host bytes_from_host; do
  a=$(awk -v n=$name '$1 == n { print $2 }' "$WORK/stats.txt")
  b=$(json_get "$WORK/stats.json" "j['$name']")
  c=$(stat_value "$WORK/legacy" $name)
  # xsock-stats is a client itself while it asks.
  [[ $name == clients_now ]] && c=$((c - 1))
  [[ -n $a && $a == "$b" && $b == "$c" ]] || fail "$name: xsockctl '$a', --json '$b', xsock-stats '$c'"
done
[[ $(json_get "$WORK/stats.json" "j['bytes_to_host'] >= 5000 and j['bytes_from_host'] >= 7000 and 'lookups' in j and j['denials'] == 0") == True ]] ||
  fail "stats do not show the client's bytes, lookups and denials: $(cat "$WORK/stats.json")"

# ---- metrics ----
curl --noproxy '*' -sS --max-time 10 "http://127.0.0.1:$metrics_port/metrics" >"$WORK/metrics.txt" ||
  fail "curl of the metrics endpoint failed"
grep -qx '# TYPE xsockd_bytes_total counter' "$WORK/metrics.txt" || fail "no TYPE line for xsockd_bytes_total"
to=$(sed -n 's/^xsockd_bytes_total{direction="to_host"} \([0-9]*\)$/\1/p' "$WORK/metrics.txt")
[[ $to == $(json_get "$WORK/stats.json" "j['bytes_to_host']") ]] || fail "metrics to_host '$to' differs from stats"
grep -q "^xsockd_client_sockets{client=\"$client_id\",pid=\"$cpid\",uid=\"0\",exe=\"$want_exe\"} 1$" "$WORK/metrics.txt" ||
  fail "no per-client metrics line for client $client_id"
grep -qx 'xsockd_sockets 1' "$WORK/metrics.txt" || fail "xsockd_sockets is not 1"

# ---- the log names the client ----
grep -q "event=client_connect client=$client_id pid=$cpid uid=0 gid=0 exe=$want_exe netns=$cnetns" "$XSOCKD_LOG" ||
  fail "no client_connect line with the client's identity"
grep -q "event=connect_ok socket=[0-9]* client=$client_id pid=$cpid uid=0 exe=$want_exe dst=127.0.0.1:$port" "$XSOCKD_LOG" ||
  fail "no connect_ok line with the client's identity"

# ---- who may ask ----
if command -v setpriv >/dev/null; then
  setpriv --reuid=65534 --regid=65534 --clear-groups "$XSOCKCTL" --admin-socket "$ADMIN" stats \
    >"$WORK/nobody.out" 2>&1
  rc=$?
  [[ $rc -eq 4 ]] || { show_file "xsockctl as nobody" "$WORK/nobody.out"; fail "xsockctl as uid 65534 exited $rc, expected 4"; }
  grep -q 'permission denied' "$WORK/nobody.out" || fail "xsockctl as nobody does not say permission denied"
else
  fail "setpriv (util-linux) is missing"
fi

# ---- not running, usage ----
timeout 10 "$XSOCKCTL" --admin-socket "$WORK/none.sock" stats >"$WORK/absent.out" 2>&1
expect_status "xsockctl without xsockd" 1 $? "$WORK/absent.out"
grep -q "xsockctl: xsockd is not running (no admin socket answers at $WORK/none.sock" "$WORK/absent.out" ||
  fail "xsockctl without xsockd: unexpected message $(cat "$WORK/absent.out")"
timeout 10 "$XSOCKCTL" frobnicate >"$WORK/usage.out" 2>&1
expect_status "xsockctl frobnicate" 2 $? "$WORK/usage.out"
"$XSOCKCTL" --help | grep -q '^EXIT STATUS' || fail "xsockctl --help has no EXIT STATUS section"

# ---- --admin-socket none, --log-format json ----
"$XSOCKD" --socket "$WORK/b/xsockd.sock" --admin-socket none --log-format json >"$WORK/b.log" 2>&1 &
b_pid=$!
BACKGROUND_PIDS+=($b_pid)
for ((i = 0; i < 100; i++)); do [[ -S $WORK/b/xsockd.sock ]] && break; sleep 0.05; done
[[ -S $WORK/b/xsockd.sock ]] || fail "second xsockd did not start"
[[ ! -e $WORK/b/xsockd-admin.sock ]] || fail "--admin-socket none still made an admin socket"
XSOCK_SOCKET=$WORK/b/xsockd.sock timeout 10 "$XSOCKCTL" stats >"$WORK/b.out" 2>&1
expect_status "xsockctl against --admin-socket none" 1 $? "$WORK/b.out"
# A client of it (xsock-stats) makes a client_connect line: every line is one JSON object.
timeout 10 "$XSOCK_STATS" --socket "$WORK/b/xsockd.sock" >/dev/null 2>&1 || fail "xsock-stats against the second xsockd failed"
for ((i = 0; i < 100; i++)); do grep -q client_disconnect "$WORK/b.log" && break; sleep 0.05; done
"$PYTHON3" - "$WORK/b.log" "$(readlink -f "$XSOCK_STATS")" <<'PY' || { show_file "json log" "$WORK/b.log"; fail "--log-format json lines are not what they should be"; }
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert all(isinstance(l, dict) and "ts" in l and "level" in l and "event" in l for l in lines), lines
c = [l for l in lines if l["event"] == "client_connect"][0]
assert isinstance(c["pid"], int) and c["uid"] == 0 and c["exe"] == sys.argv[2], c
assert [l for l in lines if l["event"] == "listening"][0]["socket"].endswith("/b/xsockd.sock")
PY

exec 7>&-  # the client exits
log "PASS"
