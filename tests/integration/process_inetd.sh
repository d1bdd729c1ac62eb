#!/usr/bin/env bash
# inetd style: xsock-process-check connects through xsockd to a one-shot server on the
# host, forks, and the child puts the routed socket on its stdin and stdout (dup2) and
# execs a real program. The server sends a payload, half-closes, and records what comes
# back. With the library preloaded in the child, the new image adopts descriptors 0 and 1
# (one channel, two numbers) at start-up:
#   cat           the payload (1 MiB) comes back intact (read/write hooks)
#   dd bs=64k     the same through dd's read/write loop
#   sha256sum     hashes the payload read with stdio and prints the hash (stdio streams)
#   sh -c         a shell reads a line with its `read` builtin and answers with `echo`
# Without the library in the child (raw execve, LD_PRELOAD removed), `cat` reads the
# channel itself: it gets the 1-byte readiness token, never the payload (that is in the
# shared-memory ring), and what it writes is taken by xsockd for a wake-up byte, so the
# server gets nothing back; cat ends when xsockd half-closes the channel after the
# server's FIN. (With a payload bigger than the ring and the socket buffers the server
# would block in send for good: nobody drains the ring.) The check pins that down: a
# program that does not load libxsock.so cannot use an inherited routed socket.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
[[ -n ${PROCESS_CHECK:-} && -f $PROCESS_CHECK ]] || fail "\$PROCESS_CHECK is not set (run through meson test)"

start_xsockd

# one_shot_server PAYLOAD_KIND: a host-side server for one connection; sets SRV_PORT,
# SRV_OUT (line 1: port; then "received N sha256 HEX").
one_shot_server() {
  SRV_OUT=$WORK/server.$RANDOM.out
  "$PYTHON3" -c '
import hashlib, random, socket, sys
kind = sys.argv[1]
payload = b"hello xsock\n" if kind == "line" else random.Random(5).randbytes(1 << 20)
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(1)
print(l.getsockname()[1], flush=True)
l.settimeout(30)
c, _ = l.accept(); c.settimeout(30)
c.sendall(payload); c.shutdown(socket.SHUT_WR)
got = bytearray()
while True:
    try:
        b = c.recv(65536)
    except ConnectionResetError:  # raw case: closed with the payload unread, RST as TCP
        break
    if not b: break
    got += b
print("payload sha256", hashlib.sha256(payload).hexdigest(), flush=True)
print("received", len(got), "sha256", hashlib.sha256(got).hexdigest(), flush=True)
print("text", got[:100].decode("latin-1").encode("unicode_escape").decode(), flush=True)
' "$1" >"$SRV_OUT" 2>&1 &
  SRV_PID=$!
  BACKGROUND_PIDS+=("$SRV_PID")
  SRV_PORT=
  local i
  for ((i = 0; i < 100; i++)); do
    SRV_PORT=$(head -n 1 "$SRV_OUT" 2>/dev/null)
    [[ $SRV_PORT =~ ^[0-9]+$ ]] && return 0
    sleep 0.05
  done
  show_file "server output" "$SRV_OUT"
  fail "one-shot server did not report its port"
}

# run_child NAME KIND [--raw-exec] -- CMD...: one inetd-style run; waits for the server.
run_child() {
  local name=$1 kind=$2
  shift 2
  one_shot_server "$kind"
  log "inetd: $name (server port $SRV_PORT)"
  routed timeout -k 5 40 "$PROCESS_CHECK" inetd 127.0.0.1 "$SRV_PORT" "$@" >"$WORK/out.$name" 2>&1
  CHILD_RC=$?
  local i
  for ((i = 0; i < 200; i++)); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$SRV_PID" 2>/dev/null && { show_file "server output" "$SRV_OUT"; fail "$name: the server did not finish"; }
  cat "$WORK/out.$name"
  cat "$SRV_OUT"
}

payload_hash() { sed -n 's/^payload sha256 //p' "$SRV_OUT"; }
received() { sed -n 's/^received \([0-9]*\) sha256 \(.*\)$/\1 \2/p' "$SRV_OUT"; }

run_child cat bytes -- cat
expect_status "inetd cat" 0 "$CHILD_RC" "$WORK/out.cat"
[[ $(received) == "1048576 $(payload_hash)" ]] || fail "cat: the server got '$(received)' back, expected the payload"

run_child dd bytes -- dd bs=64k status=none
expect_status "inetd dd" 0 "$CHILD_RC" "$WORK/out.dd"
[[ $(received) == "1048576 $(payload_hash)" ]] || fail "dd: the server got '$(received)' back, expected the payload"

# stdio: sha256sum reads stdin with fread and prints with printf (libc-internal I/O): the
# library replaced the adopted stdin/stdout FILEs by streams over its routed path.
run_child sha256sum bytes -- sha256sum
expect_status "inetd sha256sum" 0 "$CHILD_RC" "$WORK/out.sha256sum"
grep -q "^text $(payload_hash)  -\\\\n\$" "$SRV_OUT" || fail "sha256sum: the server did not get the payload's hash back"

run_child sh line -- sh -c 'read -r line; echo "got:$line"'
expect_status "inetd sh" 0 "$CHILD_RC" "$WORK/out.sh"
grep -q '^text got:hello xsock\\n$' "$SRV_OUT" || fail "sh: the server did not get 'got:hello xsock' back"

run_child raw line --raw-exec -- cat
[[ $(received | cut -d' ' -f1) == 0 ]] ||
  fail "without the library the server got '$(received)' back; expected nothing (see the comment at the top)"
log "without the library: cat exited with $CHILD_RC, the server got nothing back (as expected)"
log "PASS"
