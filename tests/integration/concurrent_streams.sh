#!/usr/bin/env bash
# Eight verified echo streams at once (all three modes, IPv4 and IPv6) through one xsockd,
# from eight processes in network namespaces with no network: every stream must come back
# intact, xsockd must count eight successful connects and, once they are gone, hold no
# socket.
source "$(dirname "$0")/lib.sh"
require_root_and_netns

clients=8
start_xsockd
start_echo_server --bind 127.0.0.1 --bind ::1 --max-clients "$clients"
stats_snapshot "$WORK/before"

modes=(epoll-et poll threads)
addrs=(127.0.0.1 ::1)
pids=()
for ((c = 0; c < clients; c++)); do
  mode=${modes[c % 3]} addr=${addrs[c % 2]}
  routed timeout -k 2 90 "$STREAM_CHECK" --mode "$mode" --bytes 32M --seed "$((c + 1))" \
    --timeout 80 --stall-timeout 15 "$addr" "$ECHO_PORT" >"$WORK/client$c.out" 2>&1 &
  pids+=($!)
  BACKGROUND_PIDS+=($!)
done
log "$clients clients started"

failed=0
for ((c = 0; c < clients; c++)); do
  wait "${pids[c]}"
  rc=$?
  log "client $c (${modes[c % 3]} to ${addrs[c % 2]}): exit $rc: $(grep -E '^(time|error)' "$WORK/client$c.out")"
  if [[ $rc -ne 0 ]]; then
    show_file "client $c output" "$WORK/client$c.out"
    failed=$((failed + 1))
  fi
done
[[ $failed -eq 0 ]] || fail "$failed of $clients clients failed"

stats_snapshot "$WORK/after"
connects=$(( $(stat_value "$WORK/after" connects_ok) - $(stat_value "$WORK/before" connects_ok) ))
[[ $connects -eq $clients ]] || fail "connects_ok grew by $connects, expected $clients"
for ((i = 0; i < 100; i++)); do
  kill -0 "$ECHO_PID" 2>/dev/null || break
  sleep 0.05
done
lines=$(grep -c "echoed $((32 << 20)) bytes, eof$" "$ECHO_OUT")
[[ $lines -eq $clients ]] || { show_file "echo server output" "$ECHO_OUT"; fail "echo server saw $lines complete clients, expected $clients"; }

expect_sockets_released "$WORK/before"
log "PASS"
