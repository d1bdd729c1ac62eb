#!/usr/bin/env bash
# iperf3, unmodified, both directions and both server placements, 3 s per run:
#  1. `iperf3 -s` on the host (127.0.0.1:22050), the client in the isolated namespace
#     through xsockd, without and with -R (client sends / server sends);
#  2. `iperf3 -s` in the namespace listening through xsockd on its default address, the
#     IPv6 wildcard [::]:22051 (dual-stack; XSOCK_ROUTE [::]/0:22051 routes the bind), the
#     client on the host: to 127.0.0.1 (accepted as a v4-mapped peer) without -R, to ::1
#     with -R.
# Each run must exit 0 and its JSON report must show bytes received > 0 at the receiving
# end; the rates are printed (they are not checked: the machine is shared).
source "$(dirname "$0")/lib.sh"
require_root_and_netns
require_programs iperf3

host_port=22050
ns_port=22051
seconds=3
expect_port_free "$host_port"
expect_port_free "$ns_port"
log "iperf3 $(debian_version iperf3)"

# report JSON_FILE: prints the bytes received, then a line "sent N received N bytes,
# R Gbit/s at the receiver"; fails if iperf3 reported an error or nothing arrived.
report() {
  "$PYTHON3" - "$1" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    d = json.load(f)
if "error" in d:
    sys.exit(f"iperf3 reported an error: {d['error']}")
sent = d["end"]["sum_sent"]["bytes"]
recv = d["end"]["sum_received"]
if recv["bytes"] <= 0:
    sys.exit(f"nothing received (sent {sent} bytes)")
print(recv["bytes"])
print(f"sent {sent} received {recv['bytes']} bytes, "
      f"{recv['bits_per_second'] / 1e9:.2f} Gbit/s at the receiver")
PY
}

# run_client WHERE RUNNER ADDRESS PORT [-R]: one bounded iperf3 run through RUNNER,
# checked; sets RECEIVED to the bytes the receiving end got.
run_client() {
  local where=$1 runner=$2 address=$3 port=$4; shift 4
  local out=$WORK/client.$port${1:-}.json rc
  $runner timeout -k 5 $((seconds + 20)) iperf3 -c "$address" -p "$port" -t "$seconds" \
    --connect-timeout 5000 -J "$@" </dev/null >"$out" 2>"$out.err"
  rc=$?
  [[ $rc -eq 0 ]] || fail_with_logs "$where${1:+ $1}: iperf3 client exited $rc" "$out" "$out.err"
  local lines
  lines=$(report "$out" 2>&1) || fail_with_logs "$where${1:+ $1}: $lines" "$out"
  RECEIVED=$(head -n 1 <<<"$lines")
  log "$where${1:+ $1}: $(tail -n 1 <<<"$lines")"
}

compat_start_xsockd

# ---- 1. server on the host, client in the namespace ------------------------------------
start_host iperf3-host iperf3 -s -B 127.0.0.1 -p "$host_port"
server=$BG_PID
wait_listening "$host_port" "$server"
ROUTE='127.0.0.0/8'
counters before
run_client "namespace client -> host server" in_ns 127.0.0.1 "$host_port"
counters sent
expect_counter_grew before sent bytes_to_host "$RECEIVED"
run_client "namespace client <- host server" in_ns 127.0.0.1 "$host_port" -R
counters received
expect_counter_grew sent received bytes_from_host "$RECEIVED"
stop_bg "$server"

# ---- 2. server in the namespace, client on the host ------------------------------------
ROUTE="[::]/0:$ns_port"
start_ns iperf3-ns iperf3 -s -p "$ns_port"
server=$BG_PID
wait_listening "$ns_port" "$server"
counters before-ns
run_client "host client -> namespace server (IPv4)" on_host 127.0.0.1 "$ns_port"
counters sent-ns
expect_counter_grew before-ns sent-ns bytes_from_host "$RECEIVED"
run_client "host client <- namespace server (IPv6)" on_host ::1 "$ns_port" -R
counters received-ns
expect_counter_grew sent-ns received-ns bytes_to_host "$RECEIVED"
kill -0 "$server" 2>/dev/null || fail_with_logs "iperf3 -s in the namespace died" "$WORK/iperf3-ns.log"
stop_bg "$server"
log "PASS"
