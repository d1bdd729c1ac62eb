#!/usr/bin/env bash
# libxsock.so loaded into programs that make no routed socket changes nothing: the same
# stdout and exit status as without the preload, and nothing on stderr. XSOCK_ROUTE names
# a destination no command uses, and xsockd is up (the library has every chance to
# interfere); its counters must not move.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
ROUTE='192.0.2.0/24'

# Sockets of several kinds, none routed: a socketpair round trip, and TCP echo over the
# host's loopback (IPv4 and IPv6) with a blocking client and a nonblocking server side.
read -r -d '' python_script <<'PY'
import hashlib, select, socket, sys
a, b = socket.socketpair()
a.sendall(b"ping")
print("socketpair:", b.recv(16))
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname()[:2], timeout=10)
    conn, _ = srv.accept()
    conn.setblocking(False)
    payload = bytes(range(256)) * 4096
    cli.sendall(payload)
    cli.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        select.select([conn], [], [], 10)
        chunk = conn.recv(65536)
        if not chunk:
            break
        got += chunk
    conn.setblocking(True)
    conn.sendall(hashlib.sha256(got).digest())
    conn.close()
    echo = cli.recv(64)
    print(host, len(got), echo == hashlib.sha256(payload).digest())
print("getaddrinfo:", sorted({ai[4][0] for ai in socket.getaddrinfo("127.0.0.1", 80)}))
sys.exit(3)
PY

# compare NAME CMD...: runs CMD without the preload, with it, and without it again. The
# two plain runs must agree (else the environment moved under us, e.g. a new file in /:
# retry); then the preloaded run must match them exactly.
compare() {
  local name=$1
  shift
  local attempt
  for ((attempt = 1; attempt <= 5; attempt++)); do
    timeout 30 "$@" >"$WORK/plain1.out" 2>"$WORK/plain1.err"
    local rc0=$?
    preloaded timeout 30 "$@" >"$WORK/pre.out" 2>"$WORK/pre.err"
    local rc1=$?
    timeout 30 "$@" >"$WORK/plain2.out" 2>"$WORK/plain2.err"
    local rc2=$?
    if [[ $rc0 -ne $rc2 ]] || ! cmp -s "$WORK/plain1.out" "$WORK/plain2.out"; then
      log "$name: two runs without the preload differ (attempt $attempt); retrying"
      continue
    fi
    if ! cmp -s "$WORK/plain1.out" "$WORK/pre.out"; then
      diff -u "$WORK/plain1.out" "$WORK/pre.out" | head -n 40
      fail "$name: stdout differs with the preload"
    fi
    [[ $rc1 -eq $rc0 ]] || fail "$name: exit status $rc1 with the preload, $rc0 without"
    if [[ -s $WORK/pre.err ]]; then
      show_file "stderr with the preload" "$WORK/pre.err"
      fail "$name: stderr is not empty with the preload"
    fi
    log "$name: identical ($(wc -l <"$WORK/pre.out") lines, exit $rc1)"
    return 0
  done
  fail "$name: output without the preload is not stable; cannot compare"
}

start_xsockd
stats_snapshot "$WORK/before"

# The comparisons below prove nothing unless the library is really loaded.
preloaded cat /proc/self/maps >"$WORK/maps" 2>&1
grep -qF "$(realpath "$XSOCK_LIB")" "$WORK/maps" ||
  grep -qF "$(basename "$XSOCK_LIB")" "$WORK/maps" ||
  fail "$XSOCK_LIB is not mapped into a preloaded process"

compare "ls -la /" ls -la /
compare "python3 sockets" "$PYTHON3" -c "$python_script"
if ! grep -q '^127.0.0.1 1048576 True$' "$WORK/pre.out" || ! grep -q '^::1 1048576 True$' "$WORK/pre.out"
then
  show_file "python output" "$WORK/pre.out"
  fail "python's loopback echo did not work"
fi
compare "git --version" git --version
compare "sh -c 'echo ok'" sh -c 'echo ok'

stats_snapshot "$WORK/after"
for c in sockets_total connects_ok connects_failed bytes_to_host bytes_from_host; do
  a=$(stat_value "$WORK/before" "$c") b=$(stat_value "$WORK/after" "$c")
  [[ $a -eq $b ]] || fail "xsockd's $c changed from $a to $b, though nothing was routed"
done
log "PASS"
