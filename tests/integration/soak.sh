#!/usr/bin/env bash
# soak.sh [SECONDS]: issue 5's soak test, bounded (default 90 s of load). Six routed
# worker processes (tests/integration/soak_client.py, each in an empty network namespace)
# open and close connections to two echo servers for SECONDS, every connection's data
# SHA-256-checked both ways, while the policy file is rewritten and xsockd is sent SIGHUP
# every second: it alternates between denying the second server's port (EACCES) and
# allowing it, and every fifth reload is a broken file that must be rejected with the old
# policy kept. Passes when every worker finished without an unexpected outcome, both
# outcomes of the toggled port were seen (the reloads took effect mid-run), the log shows
# the accepted and the rejected reloads, and xsockd's descriptors, sockets, clients and
# RSS are back at the baseline (RSS within 4 MiB: the allocator keeps some freed memory).
source "$(dirname "$0")/lib.sh"
require_root_and_netns
ROUTE=127.0.0.0/8
seconds=${1:-90}
workers=6

start_echo_server --bind 127.0.0.1
main_port=$ECHO_PORT
start_echo_server --bind 127.0.0.1
probe_port=$ECHO_PORT

policy=$WORK/xsockd.conf
# write_policy deny|allow|broken
write_policy() {
  local tmp=$policy.tmp
  case $1 in
    deny | allow)
      {
        echo '[settings]'
        echo 'connect_default = "allow"'
        echo 'bind_default = "allow"'
        echo '[[client]]'
        echo 'name = "soak"'
        echo 'connect_default = "allow"'
        echo 'bind_default = "allow"'
        if [[ $1 == deny ]]; then
          echo '  [[client.connect]]'
          echo '  action = "deny"'
          echo '  to = "127.0.0.1"'
          echo "  port = $probe_port"
          echo '  errno = "EACCES"'
        fi
      } >"$tmp"
      ;;
    broken) printf '[[client]]\nname = "soak"\nconnect_default = "sometimes"\n' >"$tmp" ;;
  esac
  mv -f "$tmp" "$policy"  # atomic: a reload never reads half a file
}
write_policy deny
start_xsockd --config "$policy"

fds() { find "/proc/$XSOCKD_PID/fd" -mindepth 1 -maxdepth 1 | wc -l; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$XSOCKD_PID/status"; }

# Warm-up, so lazily created state is in the baseline; the probe port is denied now.
routed timeout 60 "$PYTHON3" "$(dirname "$0")/soak_client.py" --port "$main_port" \
  --probe-port "$probe_port" --probe-every 2 --max-connections 4 --seconds 30 --name warm-up \
  >"$WORK/warm.out" 2>&1 || { show_file warm-up "$WORK/warm.out"; fail "the warm-up failed"; }
grep -q "probe_verified 0 probe_denied 2" "$WORK/warm.out" ||
  { show_file warm-up "$WORK/warm.out"; fail "the policy file did not deny the probe port with EACCES"; }
sleep 0.2
stats_snapshot "$WORK/base"
base_fds=$(fds)
base_rss=$(rss_kib)
log "baseline: $base_fds descriptors, RSS $base_rss KiB, sockets_now $(stat_value "$WORK/base" sockets_now), clients_now $(stat_value "$WORK/base" clients_now)"

worker_pids=()
for ((w = 1; w <= workers; w++)); do
  routed timeout -k 5 $((seconds + 60)) "$PYTHON3" "$(dirname "$0")/soak_client.py" \
    --port "$main_port" --probe-port "$probe_port" --seconds "$seconds" --seed "$w" \
    --name "worker$w" >"$WORK/worker$w.out" 2>&1 &
  worker_pids+=("$!")
  BACKGROUND_PIDS+=("$!")
done

reloads=0 rejected=0 state=deny
end=$((SECONDS + seconds))
while ((SECONDS < end)); do
  sleep 1
  if (((reloads + rejected + 1) % 5 == 0)); then
    write_policy broken
    kill -HUP "$XSOCKD_PID"
    rejected=$((rejected + 1))
    sleep 0.3
    write_policy "$state"  # the file goes back to the policy xsockd kept
  else
    [[ $state == deny ]] && state=allow || state=deny
    write_policy "$state"
    kill -HUP "$XSOCKD_PID"
    reloads=$((reloads + 1))
  fi
  kill -0 "$XSOCKD_PID" 2>/dev/null || fail "xsockd died during the soak"
done
log "sent $reloads reloads of a good policy and $rejected of a broken one"

failed=0
for ((w = 1; w <= workers; w++)); do
  wait "${worker_pids[w - 1]}"
  rc=$?
  cat "$WORK/worker$w.out"
  [[ $rc -eq 0 ]] || { failed=1; log "worker$w exited $rc"; }
done
[[ $failed -eq 0 ]] || fail "a soak worker saw an unexpected outcome (above)"

total=0 denied=0 allowed=0 bytes=0
for ((w = 1; w <= workers; w++)); do
  read -r c v pv pd b < <(awk -v n="worker$w:" '$1 == n && $2 == "connections" {print $3, $5, $7, $9, $11}' "$WORK/worker$w.out")
  [[ -n $b ]] || fail "worker$w printed no summary line"
  total=$((total + c)) denied=$((denied + pd)) allowed=$((allowed + pv)) bytes=$((bytes + b))
done
log "workers: $total connections, $allowed probe connections allowed, $denied denied (EACCES), $bytes bytes each way, all verified"
[[ $denied -gt 0 && $allowed -gt 0 ]] ||
  fail "the toggled port was never both allowed and denied: the reloads did not take effect"

ok_lines=$(grep -c 'event=policy_reload ok=1' "$XSOCKD_LOG")
bad_lines=$(grep -c 'event=policy_reload ok=0' "$XSOCKD_LOG")
log "xsockd log: $ok_lines accepted reloads, $bad_lines rejected"
[[ $ok_lines -ge $reloads ]] || fail "xsockd logged $ok_lines accepted reloads, $reloads were sent"
[[ $bad_lines -ge $rejected ]] || fail "xsockd logged $bad_lines rejected reloads, $rejected were sent"

expect_sockets_released "$WORK/base"
for ((i = 0; i < 100; i++)); do
  stats_snapshot "$WORK/end"
  [[ $(fds) -le $base_fds && $(stat_value "$WORK/end" clients_now) -le $(stat_value "$WORK/base" clients_now) ]] && break
  sleep 0.05
done
end_fds=$(fds)
end_rss=$(rss_kib)
log "after: $end_fds descriptors (baseline $base_fds), RSS $end_rss KiB (baseline $base_rss), sockets_now $(stat_value "$WORK/end" sockets_now), clients_now $(stat_value "$WORK/end" clients_now), sockets_total $(stat_value "$WORK/end" sockets_total)"
[[ $end_fds -le $base_fds ]] || { ls -l "/proc/$XSOCKD_PID/fd" >&2; fail "xsockd holds $end_fds descriptors, $base_fds before"; }
[[ $(stat_value "$WORK/end" clients_now) -le $(stat_value "$WORK/base" clients_now) ]] ||
  fail "clients_now did not return to the baseline"
[[ $((end_rss - base_rss)) -le 4096 ]] || fail "xsockd's RSS grew from $base_rss to $end_rss KiB"
log "PASS"
