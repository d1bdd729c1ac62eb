#!/usr/bin/env bash
# The configuration file decides what libxsock.so routes (XSOCK_ROUTE unset):
#  1. XSOCK_PROFILE picks a profile whose rule routes 127.0.0.0/8: from unshare -n (no
#     network at all) a 4 MiB hash-checked echo works, so it went through xsockd; with
#     XSOCK_LOG=debug the decision is logged once, naming the rule and the file line.
#  2. The same profile chosen by the application's name (apps = [...]), no XSOCK_PROFILE.
#  3. A profile that bypasses loopback: from unshare -n the connect fails (ENETUNREACH:
#     the namespace's own stack) and xsockd's connect counter does not move.
#  4. on_unreachable: with xsockd gone, "fail" gives ECONNREFUSED, "fallback" connects on
#     the host's own stack.
#  5. A malformed file: the program runs, one stderr line names file:line:column, and
#     TCP connects fail closed with ECONNREFUSED.
#  6. Publishing a port: a server in unshare -n binds port 80, which the profile maps to
#     the host's 127.0.0.1:PORT; a host client gets its data (hash-checked), and the
#     server's getsockname() shows port 80 on the listener and on the accepted connection.
source "$(dirname "$0")/lib.sh"
require_root_and_netns

start_xsockd
start_echo_server --bind 127.0.0.1 --max-clients 8
cfg=$WORK/xsock.conf
cat >"$cfg" <<'CONF'
[[profile]]
name = "isolated"
apps = ["xsock-stream-check"]
outgoing_default = "bypass"
  [[profile.outgoing]]
  action = "route"
  to = "127.0.0.0/8"

[[profile]]
name = "local-only"
outgoing_default = "route"
  [[profile.outgoing]]
  action = "bypass"
  to = "127.0.0.0/8"

[[profile]]
name = "fail"
outgoing_default = "route"

[[profile]]
name = "fallback"
outgoing_default = "route"
on_unreachable = "fallback"
CONF

with_config() {  # with_config NETNS(yes|no) PROFILE CMD...
  local ns=$1 profile=$2; shift 2
  local pre=()
  [[ $ns == yes ]] && pre=(unshare -n --)
  "${pre[@]}" env -u XSOCK_ROUTE LD_PRELOAD="$XSOCK_LIB" XSOCK_SOCKET="$SOCK" \
    XSOCK_CONFIG="$cfg" XSOCK_PROFILE="$profile" "$@"
}

log "1. XSOCK_PROFILE=isolated, XSOCK_LOG=debug, 4 MiB echo from unshare -n"
with_config yes isolated env XSOCK_LOG=debug timeout 60 "$STREAM_CHECK" --mode poll --bytes 4M \
  127.0.0.1 "$ECHO_PORT" >"$WORK/1.out" 2>"$WORK/1.err"
rc=$?
cat "$WORK/1.out" "$WORK/1.err"
expect_status "stream-check with profile isolated" 0 "$rc" "$WORK/1.err"
want="xsock: connect 127.0.0.1:$ECHO_PORT: outgoing rule 1 of profile 'isolated' ($cfg:5): route to 127.0.0.0/8"
[[ $(grep -c "^xsock: connect " "$WORK/1.err") -eq 1 ]] || fail "expected one decision line"
grep -qxF "$want" "$WORK/1.err" || fail "the decision line is not: $want"

log "2. the profile chosen by the application's name"
with_config yes "" timeout 60 "$STREAM_CHECK" --mode poll --bytes 1M 127.0.0.1 "$ECHO_PORT" \
  >"$WORK/2.out" 2>&1
rc=$?
expect_status "stream-check, profile by application" 0 "$rc" "$WORK/2.out"

log "3. local-only bypasses loopback: the empty namespace's own stack answers"
stats_snapshot "$WORK/before3"
with_config yes local-only timeout 20 "$CONNECT_CHECK" --expect ENETUNREACH 127.0.0.1 "$ECHO_PORT" \
  >"$WORK/3.out" 2>&1
rc=$?
expect_status "connect-check, local-only" 0 "$rc" "$WORK/3.out"
stats_snapshot "$WORK/after3"
[[ $(stat_value "$WORK/after3" connects_ok) -eq $(stat_value "$WORK/before3" connects_ok) ]] ||
  fail "a bypassed connect reached xsockd"

log "4. on_unreachable with xsockd gone (host namespace, echo server listening)"
stop_xsockd
with_config no fail timeout 20 "$CONNECT_CHECK" --expect ECONNREFUSED 127.0.0.1 "$ECHO_PORT" \
  >"$WORK/4a.out" 2>&1
expect_status "connect-check, on_unreachable=fail" 0 $? "$WORK/4a.out"
with_config no fallback timeout 20 "$CONNECT_CHECK" --expect ok 127.0.0.1 "$ECHO_PORT" \
  >"$WORK/4b.out" 2>&1
expect_status "connect-check, on_unreachable=fallback" 0 $? "$WORK/4b.out"

log "5. a malformed file fails closed"
printf '[[profile]]\nname = "x"\noutgoing_default = "sometimes"\n' >"$WORK/bad.conf"
start_xsockd
unshare -n -- env -u XSOCK_ROUTE LD_PRELOAD="$XSOCK_LIB" XSOCK_SOCKET="$SOCK" \
  XSOCK_CONFIG="$WORK/bad.conf" timeout 20 "$CONNECT_CHECK" --expect ECONNREFUSED 127.0.0.1 \
  "$ECHO_PORT" >"$WORK/5.out" 2>"$WORK/5.err"
rc=$?
cat "$WORK/5.out" "$WORK/5.err"
expect_status "connect-check with a malformed config" 0 "$rc" "$WORK/5.out"
[[ $(wc -l <"$WORK/5.err") -eq 1 ]] || fail "expected exactly one stderr line"
grep -q "^xsock: $WORK/bad.conf:3:[0-9]*: .*; TCP connect() and bind() fail (ECONNREFUSED / EACCES), everything else is untouched$" \
  "$WORK/5.err" || fail "the stderr line does not name the file, line and consequence"
log "6. a server in an empty namespace publishes its port 80 on the host's 127.0.0.1:PORT"
host_port=$(closed_port)
cat >"$WORK/publish.conf" <<CONF
[[profile]]
name = "publish"
outgoing_default = "bypass"
  [[profile.incoming]]
  action = "route"
  address = "0.0.0.0/0"
  port = 80
  host_port = $host_port
  host_address = "127.0.0.1"
CONF
head -c 1000000 /dev/urandom >"$WORK/blob"
unshare -n -- env -u XSOCK_ROUTE LD_PRELOAD="$XSOCK_LIB" XSOCK_SOCKET="$SOCK" \
  XSOCK_CONFIG="$WORK/publish.conf" XSOCK_PROFILE=publish timeout 30 "$PYTHON3" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80))
s.listen(4)
print("listener", *s.getsockname(), flush=True)
c, peer = s.accept()
print("accepted", *c.getsockname(), flush=True)
c.sendall(open(sys.argv[1], "rb").read())
c.close()' "$WORK/blob" >"$WORK/6.out" 2>"$WORK/6.err" &
server=$!
BACKGROUND_PIDS+=("$server")
for ((i = 0; i < 200; i++)); do
  grep -q '^listener' "$WORK/6.out" && break
  sleep 0.05
done
grep -qx 'listener 0.0.0.0 80' "$WORK/6.out" ||
  { show_file server "$WORK/6.out"; show_file stderr "$WORK/6.err"; fail "the listener's getsockname is not 0.0.0.0:80"; }
timeout 20 "$PYTHON3" -c '
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
out = open(sys.argv[2], "wb")
while (b := c.recv(65536)):
    out.write(b)' "$host_port" "$WORK/6.got" || fail "the host client could not read from 127.0.0.1:$host_port"
wait "$server" || { show_file stderr "$WORK/6.err"; fail "the published server failed"; }
cmp -s "$WORK/blob" "$WORK/6.got" || fail "the published server's data differs"
grep -qx 'accepted 127.0.0.1 80' "$WORK/6.out" ||
  { show_file server "$WORK/6.out"; fail "the accepted connection's getsockname is not 127.0.0.1:80"; }
log "published: guest 0.0.0.0:80 served on the host's 127.0.0.1:$host_port, 1 MB intact, getsockname shows port 80"
log "PASS"
