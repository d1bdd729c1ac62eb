#!/usr/bin/env bash
# sandbox.sh: a routed connection keeps working after its process confines itself with a
# seccomp filter (as OpenSSH's pre-authentication child does): xsock-sandbox-check, in a
# network namespace with no network, connects to xsock-echo-server through xsockd, calls
# prctl(PR_SET_SECCOMP) with a filter that kills on anything but read/write/poll & co,
# then moves 4 MiB each way (nonblocking poll loop, then blocking) with a hash check. The
# library must see the prctl and use only read(), write() and poll() on the channel: a
# forbidden call ends the program with SIGSYS (status 159). A third run installs the filter
# with syscall(SYS_seccomp) instead, which the library sees through its syscall() hook.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
[[ -n ${SANDBOX_CHECK:-} ]] || fail "SANDBOX_CHECK is not set"

start_xsockd
for mode in poll blocking poll-via-syscall; do
  start_echo_server --bind 127.0.0.1 --max-clients 1
  args=(--mode "${mode%-via-syscall}")
  [[ $mode == *-via-syscall ]] && args+=(--via-syscall)
  log "sandbox-check ${args[*]} --bytes 4M to 127.0.0.1 port $ECHO_PORT, in unshare -n via xsockd"
  routed timeout -k 5 60 "$SANDBOX_CHECK" "${args[@]}" --bytes 4M 127.0.0.1 "$ECHO_PORT" \
    >"$WORK/client.$mode.out" 2>&1
  rc=$?
  cat "$WORK/client.$mode.out"
  [[ $rc -eq 159 ]] && fail "$mode: killed by SIGSYS: the library made a system call the filter forbids"
  expect_status "xsock-sandbox-check --mode $mode" 0 "$rc" "$WORK/client.$mode.out"
  grep -qx "confined" "$WORK/client.$mode.out" || fail "$mode: the filter was not installed"
  grep -qx "sent 4194304 bytes, received 4194304 bytes, hash ok" "$WORK/client.$mode.out" ||
    fail "$mode: no hash-checked transfer reported"
  for ((i = 0; i < 100; i++)); do kill -0 "$ECHO_PID" 2>/dev/null || break; sleep 0.05; done
  grep -q "^client 1: echoed 4194304 bytes" "$ECHO_OUT" || {
    show_file "echo server output" "$ECHO_OUT"
    fail "$mode: echo server did not echo exactly 4194304 bytes"
  }
done
log "PASS"
