#!/usr/bin/env bash
# exec: xsock-process-check connects through xsockd, keeps a duplicate at descriptor 50
# (and a close-on-exec one at 60), closes the original and execs itself; the new image,
# with the library loaded again, adopts descriptor 50 at start-up and streams 4 MiB
# through it with every byte of the echo verified, then sees the FIN. Four ways to exec:
#   environ   execv, the environment as it was
#   scrub     execve with an empty environment ({NULL}): the library puts LD_PRELOAD and
#             XSOCK_* back
#   execle    the same through the variadic execle
#   clearenv  clearenv() then execv: environ itself lost them
# Without the library in the new image the reads would see the channel's raw token
# bytes, not the data, and getpeername would not name the echo server. Then: programs
# with nothing inherited never contact xsockd; the environment restore for set-user-ID
# targets, posix_spawn(p) and fexecve; and a routed listener inherited across exec.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
[[ -n ${PROCESS_CHECK:-} && -f $PROCESS_CHECK ]] || fail "\$PROCESS_CHECK is not set (run through meson test)"

start_xsockd
start_echo_server --bind 127.0.0.1 --max-clients 4
stats_snapshot "$WORK/before"

bytes=$((4 << 20))
for mode in environ scrub execle clearenv; do
  log "exec check ($mode), $bytes bytes, in unshare -n via xsockd"
  routed timeout -k 5 40 "$PROCESS_CHECK" exec 127.0.0.1 "$ECHO_PORT" "$bytes" "$mode" \
    >"$WORK/out.$mode" 2>&1
  rc=$?
  cat "$WORK/out.$mode"
  expect_status "xsock-process-check exec $mode" 0 "$rc" "$WORK/out.$mode"
  grep -q "^ok after exec: $bytes bytes echoed and verified, then EOF$" "$WORK/out.$mode" ||
    fail "$mode: the new image did not verify the echo"
  grep -q "^new image: LD_PRELOAD=$XSOCK_LIB XSOCK_SOCKET=$SOCK$" "$WORK/out.$mode" ||
    fail "$mode: the new image's environment lacks LD_PRELOAD or XSOCK_SOCKET"
  # One line on stderr would be the library's: a clean exec prints nothing.
  if grep -q '^libxsock:\|^xsock:' "$WORK/out.$mode"; then
    fail "$mode: the library printed a diagnostic"
  fi
done

for ((i = 0; i < 100; i++)); do kill -0 "$ECHO_PID" 2>/dev/null || break; sleep 0.05; done
n=$(grep -c "^client [0-9]*: echoed $bytes bytes, eof$" "$ECHO_OUT")
[[ $n -eq 4 ]] || { show_file "echo server output" "$ECHO_OUT"; fail "echo server finished $n clients cleanly, expected 4"; }
expect_sockets_released "$WORK/before"

# Start-up adoption costs nothing else: a program that inherited no candidate channel
# never connects to xsockd. (Each stats snapshot is one client itself.)
clients() { stats_snapshot "$WORK/clients"; stat_value "$WORK/clients" clients_total; }
c0=$(clients)
routed true || fail "true failed under the preload"
routed sh -c 'true; exec true' || fail "sh failed under the preload"
c1=$(clients)
[[ $((c1 - c0)) -eq 1 ]] || fail "programs without inherited sockets made $((c1 - c0 - 1)) control connections"
# A child holding another program's socketpair end (unnamed, peer not itself: a
# candidate) asks xsockd once who it is, and adopts nothing.
routed "$PYTHON3" -c 'import os, socket, subprocess
a, b = socket.socketpair()
os.dup2(b.fileno(), 5)
subprocess.run(["true"], pass_fds=[5], check=True)' || fail "a child with an inherited socketpair failed"
c2=$(clients)
[[ $((c2 - c1)) -eq 2 ]] || fail "a child with a foreign socketpair made $((c2 - c1 - 1)) control connections, expected 1"

# A set-user-ID target: the loader would ignore LD_PRELOAD, so the library does not put
# it back into a scrubbed environment and says so once; a plain target gets it back.
cp /usr/bin/env "$WORK/suid-env" && chmod 4755 "$WORK/suid-env" || fail "cannot make a set-user-ID copy"
routed env -i "$WORK/suid-env" >"$WORK/suid.out" 2>"$WORK/suid.err" || fail "env -i suid-env failed"
[[ $(grep -c '^libxsock: .*suid-env is set-user-ID or set-group-ID' "$WORK/suid.err") -eq 1 &&
   $(wc -l <"$WORK/suid.err") -eq 1 ]] || { show_file "stderr" "$WORK/suid.err"; fail "no single set-user-ID notice"; }
grep -q '^LD_PRELOAD=' "$WORK/suid.out" && fail "LD_PRELOAD was put into a set-user-ID program's environment"
routed env -i /usr/bin/env >"$WORK/plain.out" 2>"$WORK/plain.err" || fail "env -i env failed"
[[ -s $WORK/plain.err ]] && { show_file "stderr" "$WORK/plain.err"; fail "a plain exec printed something"; }
[[ $(grep -c "^LD_PRELOAD=$XSOCK_LIB\$" "$WORK/plain.out") -eq 1 &&
   $(grep -c "^XSOCK_SOCKET=$SOCK\$" "$WORK/plain.out") -eq 1 ]] ||
  { show_file "environment" "$WORK/plain.out"; fail "env -i did not get LD_PRELOAD and XSOCK_SOCKET back exactly once"; }

# The other ways into a new image with a scrubbed environment: posix_spawn, posix_spawnp
# and fexecve (python calls the libc functions).
for how in spawn spawnp fexecve; do
  routed "$PYTHON3" -c 'import os, sys
how = sys.argv[1]
if how == "spawn":
    os.waitpid(os.posix_spawn("/usr/bin/env", ["env"], {}), 0)
elif how == "spawnp":
    os.waitpid(os.posix_spawnp("env", ["env"], {}), 0)
else:
    sys.stdout.flush()
    os.execve(os.open("/usr/bin/env", os.O_RDONLY), ["env"], {})' "$how" >"$WORK/$how.out" 2>&1 ||
    { show_file "output" "$WORK/$how.out"; fail "$how failed"; }
  [[ $(grep -c "^LD_PRELOAD=$XSOCK_LIB\$" "$WORK/$how.out") -eq 1 &&
     $(grep -c "^XSOCK_SOCKET=$SOCK\$" "$WORK/$how.out") -eq 1 ]] ||
    { show_file "environment" "$WORK/$how.out"; fail "$how: LD_PRELOAD and XSOCK_SOCKET not restored exactly once"; }
done

# A routed listening socket across exec (sshd re-executes itself with its listener): the
# program binds 127.0.0.1 port 0 (xsockd listens on the host), execs itself with an
# empty environment, and the new image accepts on the inherited listener; a client on
# the host echoes 1 MiB, verified by the new image.
log "listener across exec"
routed timeout -k 5 30 "$PROCESS_CHECK" listen-exec 127.0.0.1 1M >"$WORK/listen.out" 2>&1 &
lpid=$!
BACKGROUND_PIDS+=("$lpid")
port=
for ((i = 0; i < 200; i++)); do
  port=$(sed -n 's/^listening on port \([0-9]*\)$/\1/p' "$WORK/listen.out")
  [[ -n $port ]] && break
  sleep 0.05
done
[[ -n $port ]] || { show_file "output" "$WORK/listen.out"; fail "the listener did not report its port"; }
timeout 30 "$PYTHON3" -c 'import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=25)
n = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    c.sendall(b)
    n += len(b)
c.shutdown(socket.SHUT_WR)
print("echoed", n)' "$port" >"$WORK/listen.client" 2>&1 || { show_file "client" "$WORK/listen.client"; fail "the echo client failed"; }
wait "$lpid"
rc=$?
cat "$WORK/listen.out"
expect_status "xsock-process-check listen-exec" 0 "$rc" "$WORK/listen.out"
grep -q '^ok after exec: accepted on the inherited listener, 1048576 bytes verified$' "$WORK/listen.out" ||
  fail "the new image did not accept and verify on the inherited listener"
log "PASS"
