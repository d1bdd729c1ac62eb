#!/usr/bin/env bash
# Per-client and global limits (issue 5, item 4) with real processes. Part 1: xsockd runs
# with --max-sockets-per-client 8. A routed python3 client (empty netns, through libxsock.so)
# opens connections to the echo server and keeps them until one fails: the 9th must fail
# with EMFILE, the first 8 must echo. While it holds its 8, a second routed process
# transfers 16 MiB with the hash checked (another client's limit is not its own). After
# the first exits, sockets_now returns to the baseline and limit_refusals counted it; a new
# client gets its 8 sockets again. Part 2: --max-ring-memory-per-client 1100K gives ENOBUFS
# at a client's 3rd socket; part 3: --memory-budget 1536K gives ENOBUFS to the first
# client's 3rd socket and to a second client's 1st; part 4: --max-request-rate 4 answers
# the 3rd connect in a row EAGAIN and serves again after a refill; part 5:
# --max-pending-connects 2 refuses a 3rd connect in progress with EAGAIN.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
ROUTE=127.0.0.0/8

start_xsockd --max-sockets-per-client 8
start_echo_server --bind 127.0.0.1

stats_snapshot "$WORK/base"

cat >"$WORK/hog.py" <<'PY'
import errno, socket, sys, time
port = int(sys.argv[1]); hold = sys.argv[2]
held = []
for i in range(1, 13):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError as e:
        print(f"connection {i}: {errno.errorcode.get(e.errno, e.errno)}", flush=True)
        break
    s.sendall(b"ping %d" % i)
    got = s.recv(64)
    if got != b"ping %d" % i:
        print(f"connection {i}: wrong echo {got!r}", flush=True)
        sys.exit(1)
    held.append(s)
    print(f"connection {i}: ok", flush=True)
# Hold the sockets until told to go (the file appears), bounded.
for _ in range(600):
    try:
        open(hold).close()
        break
    except OSError:
        time.sleep(0.05)
print(f"held {len(held)}", flush=True)
PY

routed timeout -k 5 60 "$PYTHON3" "$WORK/hog.py" "$ECHO_PORT" "$WORK/go" >"$WORK/hog.out" 2>&1 &
hog=$!
BACKGROUND_PIDS+=("$hog")
for ((i = 0; i < 200; i++)); do grep -q "^connection 9:" "$WORK/hog.out" 2>/dev/null && break; sleep 0.05; done
cat "$WORK/hog.out"
for ((i = 1; i <= 8; i++)); do
  grep -qx "connection $i: ok" "$WORK/hog.out" || fail "connection $i of the first client did not echo"
done
grep -qx "connection 9: EMFILE" "$WORK/hog.out" ||
  fail "the 9th connection of a client limited to 8 sockets did not fail with EMFILE"

log "second client, 16 MiB, while the first holds its 8 sockets"
routed timeout -k 5 60 "$STREAM_CHECK" --mode epoll-et --bytes 16M --stall-timeout 10 \
  127.0.0.1 "$ECHO_PORT" >"$WORK/good.out" 2>&1
rc=$?
cat "$WORK/good.out"
expect_status "the second client's transfer" 0 "$rc" "$WORK/good.out"

touch "$WORK/go"
wait "$hog"
expect_status "the first client" 0 $? "$WORK/hog.out"
grep -qx "held 8" "$WORK/hog.out" || fail "the first client did not hold exactly 8 sockets"
expect_sockets_released "$WORK/base"
grep -q "event=limit kind=sockets" "$XSOCKD_LOG" || fail "xsockd did not log the refusal (event=limit kind=sockets)"
if [[ -n ${XSOCKCTL:-} ]]; then
  refusals=$(timeout 10 "$XSOCKCTL" --admin-socket "$(dirname "$SOCK")/xsockd-admin.sock" stats 2>/dev/null |
             awk '$1 == "limit_refusals" {print $2}')
  log "xsockctl stats: limit_refusals ${refusals:-missing}"
  [[ ${refusals:-0} -ge 1 ]] || fail "limit_refusals did not count the refusal"
fi

rm -f "$WORK/go"
touch "$WORK/go"
routed timeout -k 5 60 "$PYTHON3" "$WORK/hog.py" "$ECHO_PORT" "$WORK/go" >"$WORK/again.out" 2>&1
grep -qx "connection 8: ok" "$WORK/again.out" && grep -qx "connection 9: EMFILE" "$WORK/again.out" ||
  { show_file "new client" "$WORK/again.out"; fail "a new client did not get exactly 8 sockets again"; }
# Ring memory: each socket costs its memfd (page + two 256 KiB rings = 528384 bytes).
# 1100 KiB per client admits two; the third fails with ENOBUFS.
stop_xsockd
start_xsockd --max-ring-memory-per-client 1100K
routed timeout -k 5 60 "$PYTHON3" "$WORK/hog.py" "$ECHO_PORT" "$WORK/go" >"$WORK/ring.out" 2>&1
grep -qx "connection 2: ok" "$WORK/ring.out" && grep -qx "connection 3: ENOBUFS" "$WORK/ring.out" ||
  { show_file "ring memory" "$WORK/ring.out"; fail "a client limited to 1100 KiB of ring memory did not get ENOBUFS at its 3rd socket"; }
log "ring memory limit: 2 sockets, then ENOBUFS"

# The global budget: 1.5 MiB for everyone. The first client holds two sockets (1056768
# bytes); a second client's first socket would go over: ENOBUFS, whoever asks.
stop_xsockd
start_xsockd --memory-budget 1536K
rm -f "$WORK/go"
routed timeout -k 5 60 "$PYTHON3" "$WORK/hog.py" "$ECHO_PORT" "$WORK/go" >"$WORK/budget1.out" 2>&1 &
first=$!
for ((i = 0; i < 200; i++)); do grep -q "^connection 3:" "$WORK/budget1.out" 2>/dev/null && break; sleep 0.05; done
grep -qx "connection 2: ok" "$WORK/budget1.out" && grep -qx "connection 3: ENOBUFS" "$WORK/budget1.out" ||
  { show_file "budget, first client" "$WORK/budget1.out"; fail "the first client did not get ENOBUFS at its 3rd socket under a 1.5 MiB budget"; }
touch "$WORK/go.second"
routed timeout -k 5 60 "$PYTHON3" "$WORK/hog.py" "$ECHO_PORT" "$WORK/go.second" >"$WORK/budget2.out" 2>&1
grep -qx "connection 1: ENOBUFS" "$WORK/budget2.out" ||
  { show_file "budget, second client" "$WORK/budget2.out"; fail "a second client did not get ENOBUFS while the budget was used up"; }
touch "$WORK/go"
wait "$first"
log "global budget: the first client's 3rd socket and the second client's 1st got ENOBUFS"

# Request rate: 4 requests a second (burst 4); a routed connect costs two (socket and
# connect), so the 3rd connect in a row is answered EAGAIN and the connection is kept:
# after the bucket refills, the same process connects again.
stop_xsockd
start_xsockd --max-request-rate 4
cat >"$WORK/rate.py" <<'PY'
import errno, socket, sys, time
port = int(sys.argv[1]); held = []
def attempt(tag):
    try:
        held.append(socket.create_connection(("127.0.0.1", port), timeout=10)); print(tag, "ok")
    except OSError as e:
        print(tag, errno.errorcode.get(e.errno, e.errno))
for i in range(1, 4):
    attempt(f"connection {i}:")
time.sleep(1.5)  # the bucket refills (4 tokens a second); not a timing assertion
attempt("after refill:")
PY
routed timeout -k 5 60 "$PYTHON3" "$WORK/rate.py" "$ECHO_PORT" >"$WORK/rate.out" 2>&1
cat "$WORK/rate.out"
grep -qx "connection 2: ok" "$WORK/rate.out" && grep -qx "connection 3: EAGAIN" "$WORK/rate.out" &&
  grep -qx "after refill: ok" "$WORK/rate.out" ||
  fail "the request rate limit did not give EAGAIN at the 3rd connect and service again after a refill"
grep -q "event=limit kind=rate" "$XSOCKD_LOG" || fail "no event=limit kind=rate line"

# Pending connects: 2 per client. The host fills a listen(0) socket's accept queue, so the
# kernel drops further SYNs and routed connects to it stay in progress; the 3rd nonblocking
# connect is refused with EAGAIN.
stop_xsockd
start_xsockd --max-pending-connects 2
cat >"$WORK/full.py" <<'PY'
import socket, sys, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(0)
print(l.getsockname()[1], flush=True)
fill = []
for _ in range(3):
    c = socket.socket(); c.setblocking(False)
    c.connect_ex(l.getsockname()); fill.append(c)
time.sleep(float(sys.argv[1]))
PY
"$PYTHON3" "$WORK/full.py" 30 >"$WORK/full.out" 2>&1 &
BACKGROUND_PIDS+=("$!")
for ((i = 0; i < 100; i++)); do [[ -s $WORK/full.out ]] && break; sleep 0.05; done
full_port=$(head -1 "$WORK/full.out")
sleep 0.2
cat >"$WORK/pending.py" <<'PY'
import errno, socket, sys
port = int(sys.argv[1]); held = []
for i in range(1, 5):
    s = socket.socket(); s.setblocking(False)
    r = s.connect_ex(("127.0.0.1", port)); held.append(s)
    print(f"connect {i}:", errno.errorcode.get(r, r) if r else "connected")
PY
routed timeout -k 5 30 "$PYTHON3" "$WORK/pending.py" "$full_port" >"$WORK/pending.out" 2>&1
cat "$WORK/pending.out"
grep -qx "connect 1: EINPROGRESS" "$WORK/pending.out" && grep -qx "connect 2: EINPROGRESS" "$WORK/pending.out" &&
  grep -qx "connect 3: EAGAIN" "$WORK/pending.out" ||
  fail "the 3rd pending connect of a client limited to 2 was not refused with EAGAIN"
grep -q "event=limit kind=pending_connects" "$XSOCKD_LOG" || fail "no event=limit kind=pending_connects line"
log "PASS"
