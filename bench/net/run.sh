#!/usr/bin/env bash
# Side-by-side network benchmark: the same client and server, measured through xsock,
# over kernel loopback, and across a veth pair between network namespaces. Prints the
# machine, the date and a Markdown table. See bench/README.md for how to read it.
#
# usage: bench/net/run.sh BUILD_DIR [--runs N] [--seconds S] [--quick]
#                                   [--configs xsock,loopback,veth] [--raw FILE] [--nice N]
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/net/run.sh BUILD_DIR [options]          (as root)
  --runs N        runs of each test per configuration (default 5; --quick: 2)
  --seconds S     duration of each stream run and each RR run (default 3; --quick: 1)
  --quick         --runs 2 --seconds 1: the whole benchmark in well under a minute
  --configs LIST  comma-separated subset of xsock,loopback,veth (default: all three)
  --raw FILE      also write every run's JSON line to FILE
  --nice N        run server, xsockd and client at nice N (e.g. -10), so that other work on
                  the machine delays them less; the header records it
Runs are interleaved (run 1 of every configuration, then run 2, ...) so that load from
elsewhere on the machine affects all configurations alike.
Environment: XSOCKD, LIBXSOCK override the paths found in BUILD_DIR.
EOF
}

die() {
  echo "run.sh: $*" >&2
  exit 2
}

# ---- arguments -------------------------------------------------------------------------
BUILD=""
RUNS=""
SECS=""
QUICK=0
CONFIGS="xsock,loopback,veth"
RAW=""
NICE=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) RUNS="${2:?--runs needs a value}"; shift 2 ;;
    --seconds) SECS="${2:?--seconds needs a value}"; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --configs) CONFIGS="${2:?--configs needs a value}"; shift 2 ;;
    --raw) RAW="${2:?--raw needs a value}"; shift 2 ;;
    --nice) NICE="${2:?--nice needs a value}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1' (try --help)" ;;
    *) [[ -z "$BUILD" ]] || die "unexpected argument '$1'"; BUILD="$1"; shift ;;
  esac
done
[[ -n "$BUILD" ]] || { usage >&2; exit 2; }
if [[ $QUICK -eq 1 ]]; then
  RUNS="${RUNS:-2}"
  SECS="${SECS:-1}"
  BUDGET=55
else
  RUNS="${RUNS:-5}"
  SECS="${SECS:-3}"
  BUDGET=280
fi
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "--runs: a positive integer, not '$RUNS'"
[[ "$SECS" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--seconds: a number, not '$SECS'"
[[ -z "$NICE" || "$NICE" =~ ^-?[0-9]+$ ]] || die "--nice: an integer, not '$NICE'"
PRIO=() # prefix for every benchmark process
[[ -z "$NICE" ]] || PRIO=(nice -n "$NICE")
IFS=, read -r -a CONFIG_LIST <<<"$CONFIGS"
for c in "${CONFIG_LIST[@]}"; do
  case "$c" in xsock | loopback | veth) ;; *) die "--configs: unknown configuration '$c'" ;; esac
done

if [[ $EUID -ne 0 ]]; then
  echo "run.sh: must run as root (creates a network namespace and a veth pair)" >&2
  exit 77 # meson's "skipped"
fi

BUILD="$(cd "$BUILD" && pwd)" || die "no build directory '$BUILD'"
SERVER="$BUILD/bench/net/xsock-bench-server"
CLIENT="$BUILD/bench/net/xsock-bench-client"
XSOCKD="${XSOCKD:-$BUILD/backend/xsockd}"
LIBXSOCK="${LIBXSOCK:-$BUILD/libintercept/libxsock.so}"
for f in "$SERVER" "$CLIENT"; do
  [[ -x "$f" ]] || die "$f not built (ninja -C $BUILD)"
done
for tool in ip unshare timeout; do
  command -v "$tool" >/dev/null || die "'$tool' not found"
done

# Every run is bounded by the client's own watchdog and by timeout(1); the whole script
# by BUDGET: runs that would not fit are skipped and the table says so.
CLIENT_TIMEOUT=$(awk -v s="$SECS" 'BEGIN { printf "%d", s + 15 }')
KILL_TIMEOUT=$((CLIENT_TIMEOUT + 5))
START=$SECONDS
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---- cleanup on every exit path --------------------------------------------------------
TMP="$(mktemp -d /tmp/xsock-bench.XXXXXX)"
NS="xsbench-$$"
VETH_HOST="xsb$$h"
VETH_NS="xsb$$n"
PIDS=()
NS_MADE=0

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $NS_MADE -eq 1 ]]; then
    ip link del "$VETH_HOST" 2>/dev/null || true
    ip netns del "$NS" 2>/dev/null || true
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Waits (bounded) for a file to appear; fails if the process that should create it died.
wait_for_file() {
  local file="$1" pid="$2" what="$3" i
  for ((i = 0; i < 100; i++)); do
    [[ -e "$file" ]] && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  echo "run.sh: $what did not start within 5 s" >&2
  return 1
}

# Starts a server on $1; sets SERVER_PORT and SERVER_PID.
start_server() {
  local addr="$1" name="$2"
  "${PRIO[@]}" "$SERVER" --addr "$addr" --port-file "$TMP/$name.port" --quiet 2>"$TMP/$name.log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_for_file "$TMP/$name.port" $! "server on $addr" ||
    die "server on $addr failed: $(tail -n 3 "$TMP/$name.log")"
  SERVER_PORT="$(cat "$TMP/$name.port")"
}

has_config() {
  [[ ",$CONFIGS," == *",$1,"* ]]
}

# ---- configurations --------------------------------------------------------------------
declare -A SKIP # configuration -> why it is not measured
PORT_LO=""
PORT_VETH=""
SERVER_PID_LO=""
SERVER_PID_VETH=""
VETH_ADDR_HOST=""
XSOCKD_PID=""
XSOCK_SOCK="$TMP/xsockd.sock"

if has_config loopback || has_config xsock; then
  start_server 127.0.0.1 server-lo
  PORT_LO="$SERVER_PORT"
  SERVER_PID_LO="$SERVER_PID"
fi

if has_config veth; then
  # A /30 of 10.200.0.0/16 that no interface uses yet; it exists only on this pair.
  octet=""
  for ((i = 0; i < 250; i++)); do
    cand=$(((($$ + i) % 250) + 1))
    if ! ip -o -4 addr show | grep -q " 10\.200\.$cand\."; then
      octet=$cand
      break
    fi
  done
  [[ -n "$octet" ]] || die "no free 10.200.X.0/30 subnet for the veth pair"
  VETH_ADDR_HOST="10.200.$octet.1"
  VETH_ADDR_NS="10.200.$octet.2"
  NS_MADE=1
  ip netns add "$NS"
  ip link add "$VETH_HOST" type veth peer name "$VETH_NS" netns "$NS"
  ip addr add "$VETH_ADDR_HOST/30" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  ip -n "$NS" addr add "$VETH_ADDR_NS/30" dev "$VETH_NS"
  ip -n "$NS" link set "$VETH_NS" up
  ip -n "$NS" link set lo up
  start_server "$VETH_ADDR_HOST" server-veth
  PORT_VETH="$SERVER_PORT"
  SERVER_PID_VETH="$SERVER_PID"
fi

start_xsockd() {
  rm -f "$XSOCK_SOCK"
  "${PRIO[@]}" "$XSOCKD" --socket "$XSOCK_SOCK" -q 2>>"$TMP/xsockd.log" &
  XSOCKD_PID=$!
  PIDS+=("$XSOCKD_PID")
  wait_for_file "$XSOCK_SOCK" "$XSOCKD_PID" "xsockd"
}

FAILED=0 # a run failed: the exit status says so after the table
if has_config xsock; then
  if [[ ! -x "$XSOCKD" ]]; then
    SKIP[xsock]="not built: $XSOCKD"
  elif [[ ! -f "$LIBXSOCK" ]]; then
    SKIP[xsock]="not built: $LIBXSOCK"
  elif ! start_xsockd; then
    SKIP[xsock]="xsockd did not start: $(tail -n 2 "$TMP/xsockd.log" | tr '\n' ' ')"
  fi
fi

# Sets CMD to the command that runs the client in configuration $1.
client_command() {
  case "$1" in
    xsock)
      # An isolated namespace with no usable network at all (lo stays down): a connect to
      # 127.0.0.1 can only succeed through xsockd.
      CMD=(unshare -n env LD_PRELOAD="$LIBXSOCK" XSOCK_SOCKET="$XSOCK_SOCK"
        XSOCK_ROUTE=127.0.0.0/8 "$CLIENT" --host 127.0.0.1 --port "$PORT_LO") ;;
    loopback) CMD=("$CLIENT" --host 127.0.0.1 --port "$PORT_LO") ;;
    veth) CMD=(ip netns exec "$NS" "$CLIENT" --host "$VETH_ADDR_HOST" --port "$PORT_VETH") ;;
  esac
}

# CPU time (user + system, all threads) process $1 has used, in clock ticks; 0 if gone.
proc_ticks() {
  local stat
  if [[ -z "$1" ]] || ! stat="$(cat "/proc/$1/stat" 2>/dev/null)"; then
    echo 0
    return
  fi
  # Fields after the ")" that ends the command name: utime and stime are the 12th and 13th.
  awk '{ print $12 + $13 }' <<<"${stat##*) }"
}
CLK_TCK="$(getconf CLK_TCK)"

# Percentage of one CPU: ticks $1 over nanoseconds $2.
cpu_pct() {
  awk -v t="$1" -v ns="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.1f", (ns > 0 ? t / hz / (ns / 1e9) * 100 : 0) }'
}

# Runs one test; appends its JSON line to $TMP/CFG.MODE or a reason to $TMP/CFG.MODE.fail.
run_test() {
  local cfg="$1" mode="$2" run="$3" out rc
  local args=(--mode stream --seconds "$SECS")
  [[ "$mode" == rr ]] && args=(--mode rr --seconds "$SECS" --count 2000000 --warmup 200)
  if [[ "$cfg" == xsock ]] && ! kill -0 "$XSOCKD_PID" 2>/dev/null; then
    echo "xsockd exited before run $run ($mode); restarting" >>"$TMP/$cfg.$mode.fail"
    FAILED=1
    start_xsockd || true
  fi
  client_command "$cfg"
  local server_pid="$SERVER_PID_LO" xsockd_pid=""
  [[ "$cfg" != veth ]] || server_pid="$SERVER_PID_VETH"
  [[ "$cfg" != xsock ]] || xsockd_pid="$XSOCKD_PID"
  local s0 x0 t0 t1
  s0="$(proc_ticks "$server_pid")"
  x0="$(proc_ticks "$xsockd_pid")"
  t0="$(date +%s%N)"
  rc=0
  out="$(timeout -k 2 "$KILL_TIMEOUT" "${PRIO[@]}" "${CMD[@]}" "${args[@]}" --label "$cfg" \
    --timeout "$CLIENT_TIMEOUT" 2>"$TMP/client.err")" || rc=$?
  t1="$(date +%s%N)"
  if [[ $rc -eq 0 && "$out" == "{"*"}" ]]; then
    # Server and xsockd CPU over the whole invocation (connect and start-up included).
    out="${out%\}},\"server_cpu_pct\":$(cpu_pct $(($(proc_ticks "$server_pid") - s0)) $((t1 - t0)))"
    [[ -z "$xsockd_pid" ]] ||
      out="$out,\"xsockd_cpu_pct\":$(cpu_pct $(($(proc_ticks "$xsockd_pid") - x0)) $((t1 - t0)))"
    out="$out}"
    echo "$out" >>"$TMP/$cfg.$mode"
    [[ -z "$RAW" ]] || echo "$out" >>"$RAW"
    echo "  [run $run] $(tail -n 1 "$TMP/client.err")" >&2
  else
    local why
    why="$(tail -n 1 "$TMP/client.err")"
    [[ $rc -eq 124 || $rc -eq 137 ]] && why="killed by timeout after ${KILL_TIMEOUT}s ${why}"
    if [[ -n "$xsockd_pid" ]] && ! kill -0 "$xsockd_pid" 2>/dev/null; then
      local st=0
      wait "$xsockd_pid" 2>/dev/null || st=$?
      why="$why; xsockd died (exit status $st)"
    fi
    echo "run $run: exit $rc: ${why:-no message}" >>"$TMP/$cfg.$mode.fail"
    FAILED=1
    echo "  [run $run] $cfg $mode FAILED (exit $rc): $why" >&2
  fi
}

# ---- measure ---------------------------------------------------------------------------
[[ -z "$RAW" ]] || : >"$RAW"
PER_RUN=$(awk -v s="$SECS" 'BEGIN { printf "%d", 2 * s + 2 }') # seconds per config per run
echo "run.sh: $RUNS runs x (${SECS}s stream + ${SECS}s rr) x ${#CONFIG_LIST[@]} configurations" >&2
for ((run = 1; run <= RUNS; run++)); do
  for cfg in "${CONFIG_LIST[@]}"; do
    [[ -z "${SKIP[$cfg]:-}" ]] || continue
    if ((SECONDS - START + PER_RUN > BUDGET)); then
      echo "run.sh: time budget (${BUDGET}s) reached; skipping run $run of $cfg" >&2
      echo "run $run: skipped, time budget ${BUDGET}s reached" >>"$TMP/$cfg.stream.fail"
      continue
    fi
    run_test "$cfg" stream "$run"
    run_test "$cfg" rr "$run"
  done
done

# ---- report ----------------------------------------------------------------------------
# Prints "median min max count" of the numeric JSON field $2 over the lines of file $1.
stats() {
  [[ -s "$1" ]] || { echo "- - - 0"; return; }
  sed -n "s/.*\"$2\":\([-0-9.e+]*\).*/\1/p" "$1" | sort -g | awk '
    { v[NR] = $1 }
    END {
      if (NR == 0) { print "- - - 0"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      print m, v[1], v[NR], NR
    }'
}

cell() { # median min max count format
  if [[ "$4" == 0 ]]; then
    echo "failed"
  else
    awk -v m="$1" -v lo="$2" -v hi="$3" -v f="$5" 'BEGIN {
      printf f " (" f "–" f ")", m, lo, hi }'
  fi
}

CPU="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
COMMIT="$(git -C "$(dirname "$0")" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "Date: $(date -u '+%Y-%m-%d %H:%M UTC')  "
echo "Machine: $(nproc) CPUs, ${CPU:-unknown CPU}, Linux $(uname -r)  "
echo "Load average at start: $LOAD_AT_START; commit $COMMIT${NICE:+; benchmark processes at nice $NICE}  "
echo "Each cell: median (min–max) of $RUNS runs; stream ${SECS}s, 64 KiB writes; RR ${SECS}s of 1-byte round trips."
echo
echo "| configuration | stream Gbit/s | 1-byte RR transactions/s | RR p50 µs | RR p99 µs |"
echo "|---|---:|---:|---:|---:|"
NOTES=()
for cfg in "${CONFIG_LIST[@]}"; do
  if [[ -n "${SKIP[$cfg]:-}" ]]; then
    echo "| $cfg | not run | not run | | |"
    NOTES+=("$cfg: ${SKIP[$cfg]}")
    continue
  fi
  read -r s_med s_min s_max s_n < <(stats "$TMP/$cfg.stream" gbit_per_sec)
  read -r r_med r_min r_max r_n < <(stats "$TMP/$cfg.rr" tps)
  read -r p50 _ _ _ < <(stats "$TMP/$cfg.rr" lat_p50_us)
  read -r p99 _ _ _ < <(stats "$TMP/$cfg.rr" lat_p99_us)
  stream_cell="$(cell "$s_med" "$s_min" "$s_max" "$s_n" "%.2f")"
  rr_cell="$(cell "$r_med" "$r_min" "$r_max" "$r_n" "%.0f")"
  [[ "$r_n" == 0 ]] || { p50="$(printf '%.1f' "$p50")"; p99="$(printf '%.1f' "$p99")"; }
  [[ "$r_n" != 0 ]] || { p50=""; p99=""; }
  echo "| $cfg | $stream_cell | $rr_cell | $p50 | $p99 |"
  for mode in stream rr; do
    if [[ -s "$TMP/$cfg.$mode.fail" ]]; then
      while IFS= read -r line; do NOTES+=("$cfg $mode: $line"); done <"$TMP/$cfg.$mode.fail"
    fi
  done
done
echo
echo "CPU use while measuring, % of one CPU (median of runs): client / server / xsockd."
echo
echo "| configuration | stream: client | server | xsockd | RR: client | server | xsockd |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for cfg in "${CONFIG_LIST[@]}"; do
  [[ -z "${SKIP[$cfg]:-}" ]] || continue
  row="| $cfg"
  for mode in stream rr; do
    for field in cpu_pct server_cpu_pct xsockd_cpu_pct; do
      read -r med _ _ n < <(stats "$TMP/$cfg.$mode" "$field")
      if [[ "$n" == 0 ]]; then row="$row | –"; else row="$row | $(printf '%.0f' "$med")"; fi
    done
  done
  echo "$row |"
done
if [[ ${#NOTES[@]} -gt 0 ]]; then
  echo
  echo "Not measured / failed:"
  for n in "${NOTES[@]}"; do echo "- $n"; done
  if [[ -s "$TMP/xsockd.log" ]]; then
    echo
    echo "Last lines of xsockd's log:"
    echo '```'
    tail -n 15 "$TMP/xsockd.log"
    echo '```'
  fi
fi
echo
echo "run.sh: finished in $((SECONDS - START)) s" >&2
if [[ $FAILED -eq 1 ]]; then
  echo "run.sh: some runs failed (listed under the table)" >&2
  exit 1
fi
