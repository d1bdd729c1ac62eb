#!/usr/bin/env bash
# Name resolution through xsockd (XSOCK_RESOLVE=backend), against a real DNS server.
#
# The test builds its own "host": a network namespace with only an up loopback and a
# private mount namespace in which /etc/resolv.conf says `nameserver 127.0.0.1`. There it
# runs dnsmasq on 127.0.0.1:53, serving a few names in xsock.test that only it knows
# (--no-resolv --no-hosts, NXDOMAIN for the rest of xsock.test), and xsockd. The
# application runs in a further `unshare -n` namespace (no network at all) and reaches
# xsockd through its AF_UNIX socket. Every lookup is made twice: directly on the "host"
# side (glibc, no preload) and from the isolated application through xsockd; the outputs
# and exit codes must be the same (differential). A lookup that waits for a DNS timeout
# (slow.xsock.test goes to a server that never answers) ends in EAI_AGAIN on both sides and
# does not delay another client's lookup meanwhile. curl -4 / -6 by name from the empty
# namespace downloads from a web server on the name's addresses (resolved and routed
# through xsockd). Without XSOCK_RESOLVE the isolated
# application cannot resolve the name; with xsockd gone the library falls back to libc.
# No packet leaves the namespaces the test creates; about 15 s.
if [[ -z ${XSOCK_RESOLVE_TEST_INNER:-} ]]; then
  if [[ $(id -u) -ne 0 ]] || ! unshare -n -m true 2>/dev/null; then
    echo "resolve_backend: needs root and unshare -n -m"
    exit 77
  fi
  if ! command -v dnsmasq >/dev/null; then
    echo "resolve_backend: dnsmasq is not installed (apt-get install dnsmasq-base)"
    exit 77
  fi
  XSOCK_RESOLVE_TEST_INNER=1 exec unshare -n -m --propagation private -- bash "$0" "$@"
fi

LIB_REQUIRED="XSOCKD XSOCK_LIB XSOCK_STATS PYTHON3"
source "$(dirname "$0")/lib.sh"
require_root_and_netns

NAME=only-in-test.xsock.test
ALIAS=alias-in-test.xsock.test
MISSING=missing.xsock.test

# ---- the "host": loopback, resolv.conf, dnsmasq, xsockd ----
ip link set lo up || fail "cannot bring up lo in the test's host namespace"
# Addresses other than 127.0.0.1 and ::1 count as configured for AI_ADDRCONFIG, so the
# host side answers family-specific lookups (getent ahostsv4/v6) as a networked host does.
ip addr add 10.77.0.1/32 dev lo && ip addr add fd77::1/128 dev lo ||
  fail "cannot add test addresses to lo"
printf 'nameserver 127.0.0.1\noptions timeout:2 attempts:2\n' >"$WORK/resolv.conf"
mount --bind "$WORK/resolv.conf" /etc/resolv.conf || fail "cannot bind-mount /etc/resolv.conf"

# slow.xsock.test is forwarded to a "DNS server" that reads and never answers, so its
# lookups end only with glibc's timeout (2 s x 2 attempts): EAI_AGAIN.
"$PYTHON3" -c 'import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.3", 5300))
time.sleep(120)' &
BACKGROUND_PIDS+=("$!")

dnsmasq --no-daemon --conf-file=/dev/null --user=root --pid-file= \
  --no-resolv --no-hosts --no-poll --bind-interfaces --listen-address=127.0.0.1 --port=53 \
  --local=/xsock.test/ --server=/slow.xsock.test/127.0.0.3#5300 \
  --host-record=$NAME,10.77.0.9,fd77::9 \
  --host-record=second.xsock.test,10.77.0.10 \
  --cname=$ALIAS,$NAME \
  --log-queries --log-facility=- >"$WORK/dnsmasq.log" 2>&1 &
DNSMASQ_PID=$!
BACKGROUND_PIDS+=("$DNSMASQ_PID")
for ((i = 0; i < 100; i++)); do
  getent ahosts second.xsock.test >/dev/null 2>&1 && break
  kill -0 "$DNSMASQ_PID" 2>/dev/null || { show_file dnsmasq "$WORK/dnsmasq.log"; fail "dnsmasq exited"; }
  sleep 0.05
done
getent ahosts $NAME >/dev/null || { show_file dnsmasq "$WORK/dnsmasq.log"; fail "the host side cannot resolve $NAME through dnsmasq"; }
log "dnsmasq pid $DNSMASQ_PID serves $NAME on 127.0.0.1:53"

start_xsockd --log-level debug

# isolated CMD...: CMD in an empty network namespace with the preload, names resolved
# through xsockd only if XSOCK_RESOLVE=backend is in the environment.
isolated() {
  timeout -k 2 30 unshare -n -- env LD_PRELOAD="$XSOCK_LIB" XSOCK_SOCKET="$SOCK" "$@"
}

lookups=0
# same WHAT CMD...: runs CMD on the host side and isolated through xsockd; stdout and exit
# status must be equal. Leaves them in $WORK/host.out and $HOST_RC.
same() {
  local what=$1
  shift
  timeout -k 2 30 "$@" >"$WORK/host.out" 2>"$WORK/host.err"
  HOST_RC=$?
  isolated XSOCK_RESOLVE=backend "$@" >"$WORK/app.out" 2>"$WORK/app.err"
  local app_rc=$?
  lookups=$((lookups + 1))
  if [[ $app_rc -ne $HOST_RC ]] || ! cmp -s "$WORK/host.out" "$WORK/app.out"; then
    show_file "host side: $* (exit $HOST_RC)" "$WORK/host.out"
    show_file "host side stderr" "$WORK/host.err"
    show_file "isolated through xsockd (exit $app_rc)" "$WORK/app.out"
    show_file "isolated stderr" "$WORK/app.err"
    show_file dnsmasq "$WORK/dnsmasq.log"
    fail "$what: the isolated application's answer differs from the host's"
  fi
  [[ -s $WORK/app.err ]] && { show_file "isolated stderr" "$WORK/app.err"; fail "$what: stderr not empty"; }
  log "same answer, exit $HOST_RC: $what: $(head -c 200 "$WORK/host.out" | tr '\n' '|')"
}

# expect_in TEXT: the last host-side answer contains TEXT.
expect_in() { grep -qF -- "$1" "$WORK/host.out" || { show_file answer "$WORK/host.out"; fail "answer lacks '$1'"; }; }

# ---- getent: getaddrinfo, gethostbyname2, gethostbyaddr ----
same "getent ahosts (getaddrinfo, AI_CANONNAME|AI_ADDRCONFIG)" getent ahosts $NAME
expect_in "fd77::9         STREAM $NAME"
expect_in "10.77.0.9       STREAM"
expect_in "fd77::9"
same "getent ahostsv4" getent ahostsv4 $NAME
same "getent ahostsv6" getent ahostsv6 $NAME
same "getent ahosts of a CNAME (canonical name)" getent ahosts $ALIAS
expect_in "STREAM $NAME"
same "getent hosts (gethostbyname2)" getent hosts $NAME
expect_in "fd77::9"
same "getent hosts of a CNAME (aliases)" getent hosts $ALIAS
expect_in "$ALIAS"
same "getent hosts ADDR (gethostbyaddr)" getent hosts 10.77.0.9
expect_in "$NAME"
same "getent hosts ADDR6 (gethostbyaddr, AF_INET6)" getent hosts fd77::9
same "getent ahosts of a missing name" getent ahosts $MISSING
[[ $HOST_RC -eq 2 ]] || fail "getent ahosts $MISSING exited $HOST_RC on the host side, expected 2 (not found)"
same "getent hosts of a missing name" getent hosts $MISSING
[[ $HOST_RC -eq 2 ]] || fail "getent hosts $MISSING exited $HOST_RC, expected 2"
same "getent hosts of an address without PTR" getent hosts 10.77.0.200
same "getent ahosts of a literal (answered locally)" getent ahosts 10.77.0.9

# ---- python: getaddrinfo with hints, getnameinfo, gethostbyname_ex, errors ----
cat >"$WORK/lookups.py" <<'EOF'
import socket, sys
N, A, M = sys.argv[1:4]
def show(what, f):
    try:
        print(what, repr(f()))
    except OSError as e:
        print(what, type(e).__name__, e.errno, e.strerror)
S, D = socket.SOCK_STREAM, socket.SOCK_DGRAM
show("gai", lambda: socket.getaddrinfo(N, "https"))
show("gai v4 stream canon", lambda: socket.getaddrinfo(N, 443, socket.AF_INET, S, 0, socket.AI_CANONNAME))
show("gai v6 dgram", lambda: socket.getaddrinfo(N, "domain", socket.AF_INET6, D))
show("gai alias canon", lambda: socket.getaddrinfo(A, None, 0, S, 0, socket.AI_CANONNAME))
show("gai v4mapped", lambda: socket.getaddrinfo("second.xsock.test", 80, socket.AF_INET6, S, 0, socket.AI_V4MAPPED))
show("gai v4mapped all", lambda: socket.getaddrinfo(N, 80, socket.AF_INET6, S, 0, socket.AI_V4MAPPED | socket.AI_ALL))
show("gai passive", lambda: socket.getaddrinfo(N, 80, 0, S, 0, socket.AI_PASSIVE))
show("gai numericserv bad", lambda: socket.getaddrinfo(N, "http", 0, S, 0, socket.AI_NUMERICSERV))
show("gai missing", lambda: socket.getaddrinfo(M, 80))
show("gai missing v4", lambda: socket.getaddrinfo(M, 80, socket.AF_INET))
show("gai only v4 name as v6", lambda: socket.getaddrinfo("second.xsock.test", 80, socket.AF_INET6))
show("gai bad service", lambda: socket.getaddrinfo(N, "no-such-service-xsock"))
show("gni", lambda: socket.getnameinfo(("10.77.0.9", 443), 0))
show("gni v6", lambda: socket.getnameinfo(("fd77::9", 22, 0, 0), socket.NI_NUMERICSERV))
show("gni namereqd none", lambda: socket.getnameinfo(("10.77.0.200", 80), socket.NI_NAMEREQD))
show("gni nofqdn", lambda: socket.getnameinfo(("10.77.0.9", 80), socket.NI_NOFQDN | socket.NI_DGRAM))
show("ghbn", lambda: socket.gethostbyname(N))
show("ghbn_ex alias", lambda: socket.gethostbyname_ex(A))
show("ghba", lambda: socket.gethostbyaddr("10.77.0.9"))
show("ghbn missing", lambda: socket.gethostbyname_ex(M))
show("ghba none", lambda: socket.gethostbyaddr("10.77.0.200"))
EOF
same "python getaddrinfo/getnameinfo/gethostby* with hints and errors" \
  "$PYTHON3" "$WORK/lookups.py" $NAME $ALIAS $MISSING
expect_in "gai missing gaierror -2"
expect_in "10.77.0.9"

# ---- a lookup waiting for a DNS timeout does not hold up xsockd's loop ----
cat >"$WORK/slow.py" <<'EOF'
import socket, time
t = time.monotonic()
try:
    socket.getaddrinfo("x.slow.xsock.test", 80)
    print("resolved")
except socket.gaierror as e:
    print("gaierror", e.errno)
print("seconds %.1f" % (time.monotonic() - t))
EOF
isolated XSOCK_RESOLVE=backend "$PYTHON3" "$WORK/slow.py" >"$WORK/slow.out" 2>&1 &
slow_pid=$!
BACKGROUND_PIDS+=("$slow_pid")
sleep 0.5
start_ms=$(date +%s%3N)
isolated XSOCK_RESOLVE=backend getent ahosts $NAME >"$WORK/fast.out" 2>&1 ||
  { show_file fast "$WORK/fast.out"; fail "a lookup during a slow one failed"; }
fast_ms=$(( $(date +%s%3N) - start_ms ))
kill -0 "$slow_pid" 2>/dev/null || { show_file slow "$WORK/slow.out"; fail "the slow lookup ended before the check"; }
[[ $fast_ms -lt 2000 ]] || fail "a lookup took $fast_ms ms while another waited for its DNS timeout"
wait "$slow_pid"
grep -qx "gaierror -3" "$WORK/slow.out" || { show_file slow "$WORK/slow.out"; fail "the slow lookup did not end in EAI_AGAIN"; }
log "while a lookup waited for its DNS timeout ($(tail -n 1 "$WORK/slow.out"), EAI_AGAIN), another took $fast_ms ms"
same "a lookup that times out on the host (EAI_AGAIN)" \
  "$PYTHON3" -c "import socket
try: socket.getaddrinfo('y.slow.xsock.test', 80)
except socket.gaierror as e: print(e.errno)"
expect_in "-3"

# ---- the whole way: curl by name from the empty namespace, resolved and routed ----
# The name's addresses exist on the "host" side's loopback, where a web server listens.
ip addr add 10.77.0.9/32 dev lo && ip addr add fd77::9/128 dev lo nodad ||
  fail "cannot add $NAME's addresses to lo"
mkdir -p "$WORK/www" && head -c 3000000 /dev/urandom >"$WORK/www/blob"
"$PYTHON3" -m http.server --bind :: --directory "$WORK/www" 8099 >"$WORK/http.log" 2>&1 &
BACKGROUND_PIDS+=("$!")
for ((i = 0; i < 100; i++)); do
  curl -s -o /dev/null "http://[fd77::9]:8099/" && break
  sleep 0.05
done
for family in -4 -6; do
  isolated XSOCK_RESOLVE=backend XSOCK_ROUTE='10.77.0.0/16,[fd77::]/16' \
    curl -sS $family --max-time 20 -o "$WORK/got$family" "http://$NAME:8099/blob" 2>"$WORK/curl.err" ||
    { show_file curl "$WORK/curl.err"; show_file http "$WORK/http.log"; fail "curl $family http://$NAME:8099/blob failed"; }
  cmp -s "$WORK/got$family" "$WORK/www/blob" || fail "curl $family: the download differs"
done
log "curl -4 and -6 http://$NAME:8099/blob from the empty namespace: resolved by xsockd, routed, 3 MB intact"

# ---- a host rule of the configuration file decides the connect to the name's address ----
# No XSOCK_ROUTE: the profile resolves through xsockd and routes only connects to
# addresses it resolved from $NAME; the same address written as a literal is bypassed
# (the empty namespace's own stack: curl cannot connect, exit 7).
cat >"$WORK/names.conf" <<CONF
[[profile]]
name = "names"
resolve = "backend"
outgoing_default = "bypass"
  [[profile.outgoing]]
  action = "route"
  host = "only-in-test.*.test"
  port = 8099
CONF
by_config() {
  timeout -k 2 30 unshare -n -- env -u XSOCK_ROUTE LD_PRELOAD="$XSOCK_LIB" XSOCK_SOCKET="$SOCK" \
    XSOCK_CONFIG="$WORK/names.conf" XSOCK_PROFILE=names "$@"
}
by_config env XSOCK_LOG=debug curl -sS -4 --max-time 20 -o "$WORK/got-named" \
  "http://$NAME:8099/blob" 2>"$WORK/named.err" ||
  { show_file curl "$WORK/named.err"; fail "curl by name with a host rule failed"; }
cmp -s "$WORK/got-named" "$WORK/www/blob" || fail "curl by name with a host rule: the download differs"
want="xsock: connect 10.77.0.9:8099: outgoing rule 1 of profile 'names' ($WORK/names.conf:5): route host only-in-test.*.test port 8099 (resolved from $NAME)"
grep -qxF "$want" "$WORK/named.err" || { show_file stderr "$WORK/named.err"; fail "no decision line: $want"; }
by_config curl -sS -4 --max-time 20 -o /dev/null "http://10.77.0.9:8099/blob" 2>"$WORK/literal.err"
rc=$?
[[ $rc -eq 7 ]] || { show_file curl "$WORK/literal.err"; fail "curl of the literal address exited $rc, expected 7 (bypassed: no network)"; }
log "host rule: curl http://$NAME:8099 routed by 'host = only-in-test.*.test' (3 MB intact); the literal 10.77.0.9 bypassed (curl exit 7)"

# ---- without XSOCK_RESOLVE the isolated application cannot resolve the name ----
isolated getent ahosts $NAME >"$WORK/plain.out" 2>&1
rc=$?
getent_rc=$rc
[[ $rc -eq 2 ]] || { show_file "output" "$WORK/plain.out"; fail "without XSOCK_RESOLVE the isolated getent exited $rc, expected 2 (not resolved)"; }
isolated "$PYTHON3" -c "import socket
try:
    socket.getaddrinfo('$NAME', 80)
except socket.gaierror as e:
    raise SystemExit(3)" >"$WORK/plain.out" 2>&1
rc=$?
[[ $rc -eq 3 ]] || { show_file "output" "$WORK/plain.out"; fail "without XSOCK_RESOLVE the isolated python exited $rc, expected 3 (gaierror)"; }
log "without XSOCK_RESOLVE the isolated namespace cannot resolve $NAME (getent exit $getent_rc, python gaierror)"

# ---- xsockd gone: the library falls back to libc (which cannot resolve in there) ----
stop_xsockd
isolated XSOCK_RESOLVE=backend getent ahosts $NAME >"$WORK/gone.out" 2>"$WORK/gone.err"
rc=$?
[[ $rc -eq 2 ]] || { show_file out "$WORK/gone.out"; fail "with xsockd gone getent exited $rc, expected 2"; }
grep -q "cannot reach xsockd" "$WORK/gone.err" || { show_file stderr "$WORK/gone.err"; fail "no 'cannot reach xsockd' line"; }

# Every isolated lookup reached xsockd, and dnsmasq saw only loopback clients.
n=$(grep -c 'event=lookup ' "$XSOCKD_LOG")
[[ $n -ge $lookups ]] || fail "xsockd logged $n lookups for $lookups isolated commands"
if grep -E 'query\[' "$WORK/dnsmasq.log" | grep -vqE 'from (127\.0\.0\.1|::1)$'; then
  show_file dnsmasq "$WORK/dnsmasq.log"
  fail "dnsmasq got a query from outside loopback"
fi
log "$lookups commands compared, xsockd answered $n lookups; PASS"
