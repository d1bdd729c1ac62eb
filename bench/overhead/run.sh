#!/usr/bin/env bash
# What libxsock.so costs a program on the sockets it does NOT route (issue 4's goal: under
# 2 % on a TCP loopback request/response loop), side by side in one run:
#   kernel    no preload at all
#   preload   LD_PRELOAD=libxsock.so, a profile with no rules (every connect() decided,
#             bypass) for client and server
#   rules32   the same with 32 routing rules that do not match loopback (every rule is
#             looked at on each connect)
# Measured: 1-byte RR transactions/s and p50 latency (median of interleaved runs, server
# and client pinned to different CPUs), user-space instructions per round trip from
# valgrind's callgrind (repeatable whatever else the machine does), connect()s per second
# to a loopback listener, and the routing decision alone (xsock-decision-bench).
#
# usage: bench/overhead/run.sh BUILD_DIR [--runs N] [--count N] [--quick]
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: bench/overhead/run.sh BUILD_DIR [options]
  --runs N     interleaved runs per configuration (default 7; --quick: 3)
  --count N    measured round trips per RR run (default 100000; --quick: 20000); the
               connect test makes N/5 connects per run
  --quick      fewer and shorter runs (well under a minute)
Needs valgrind for the instruction counts (left out, saying so, when missing).
USAGE
}
die() { echo "overhead: $*" >&2; exit 2; }

BUILD="" RUNS="" COUNT="" QUICK=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --runs) RUNS=${2:?--runs needs a value}; shift 2 ;;
    --count) COUNT=${2:?--count needs a value}; shift 2 ;;
    --quick) QUICK=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) die "unknown option '$1' (try --help)" ;;
    *) [[ -z $BUILD ]] || die "unexpected argument '$1'"; BUILD=$1; shift ;;
  esac
done
[[ -n $BUILD ]] || { usage >&2; exit 2; }
if [[ $QUICK -eq 1 ]]; then RUNS=${RUNS:-3}; COUNT=${COUNT:-20000}; else RUNS=${RUNS:-7}; COUNT=${COUNT:-100000}; fi
BUILD=$(cd "$BUILD" && pwd)
SERVER=$BUILD/bench/net/xsock-bench-server
CLIENT=$BUILD/bench/net/xsock-bench-client
CONNECT=$BUILD/bench/overhead/xsock-bench-connect
DECISION=$BUILD/bench/overhead/xsock-decision-bench
LIB=${LIBXSOCK:-$BUILD/libintercept/libxsock.so}
for f in "$SERVER" "$CLIENT" "$CONNECT" "$LIB"; do [[ -e $f ]] || die "missing $f (ninja -C $BUILD)"; done

WORK=$(mktemp -d /tmp/xsock-overhead.XXXXXX)
SERVER_PID=""
cleanup() {
  [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/none.conf" <<'CONF'
[[profile]]
name = "none"
outgoing_default = "bypass"
CONF
{
  printf '[[profile]]\nname = "rules32"\noutgoing_default = "bypass"\n'
  for ((i = 0; i < 32; i++)); do
    printf '[[profile.outgoing]]\naction = "route"\nto = "10.%d.0.0/16"\nport = %d\n' $i $((1000 + i))
  done
} >"$WORK/rules32.conf"

CONFIGS=(kernel preload rules32)
# env_for CONFIG: the environment a configuration's processes run with.
env_for() {
  case $1 in
    kernel) echo "-u LD_PRELOAD -u XSOCK_ROUTE -u XSOCK_CONFIG" ;;
    preload) echo "-u XSOCK_ROUTE LD_PRELOAD=$LIB XSOCK_CONFIG=$WORK/none.conf XSOCK_PROFILE=none" ;;
    rules32) echo "-u XSOCK_ROUTE LD_PRELOAD=$LIB XSOCK_CONFIG=$WORK/rules32.conf XSOCK_PROFILE=rules32" ;;
  esac
}
# Server on CPU 0, client on CPU 1 (when there are two), for every configuration alike.
CPUS=$(nproc)
pin() { if [[ $CPUS -ge 2 ]]; then taskset -c "$1" "${@:2}"; else "${@:2}"; fi; }

start_server() {  # start_server CONFIG
  rm -f "$WORK/port"
  local cpu=()
  [[ $CPUS -ge 2 ]] && cpu=(taskset -c 0)
  # shellcheck disable=SC2046
  "${cpu[@]}" env $(env_for "$1") "$SERVER" --addr 127.0.0.1 --port-file "$WORK/port" --quiet \
    </dev/null >/dev/null 2>&1 &
  SERVER_PID=$!
  for ((i = 0; i < 200; i++)); do [[ -s $WORK/port ]] && break; sleep 0.02; done
  [[ -s $WORK/port ]] || die "the $1 server did not start"
  PORT=$(cat "$WORK/port")
}
stop_server() { kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""; }

json() { python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())[sys.argv[1]])' "$1"; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
range() { sort -g | awk 'NR==1{lo=$1} {hi=$1} END {printf "%s–%s", lo, hi}'; }

echo "# libxsock.so overhead on sockets it does not route"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -r), $CPUS CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "$RUNS interleaved runs; RR: $COUNT round trips per run; connect: $((COUNT / 5)) connects per run"
echo

CONNECTS=$((COUNT / 5))
for ((r = 1; r <= RUNS; r++)); do
  for c in "${CONFIGS[@]}"; do
    start_server "$c"
    # shellcheck disable=SC2046
    out=$(pin 1 env $(env_for "$c") timeout 120 "$CLIENT" --mode rr --port "$PORT" \
      --count "$COUNT" --warmup 2000 --label "$c" 2>/dev/null) || die "$c RR run $r failed"
    stop_server
    echo "$out" | json tps >>"$WORK/$c.tps"
    echo "$out" | json lat_p50_us >>"$WORK/$c.p50"
    # shellcheck disable=SC2046
    out=$(pin 1 env $(env_for "$c") timeout 120 "$CONNECT" --count "$CONNECTS" --label "$c") ||
      die "$c connect run $r failed"
    echo "$out" | json per_second >>"$WORK/$c.cps"
  done
  echo "run $r of $RUNS done" >&2
done

# User-space instructions per round trip: callgrind counts of the client at two lengths,
# so start-up (loading the library, reading the profile) cancels out.
have_valgrind=0
command -v valgrind >/dev/null && have_valgrind=1
ir() {  # ir CONFIG COUNT -> total Ir of the client
  start_server "$1"
  # shellcheck disable=SC2046
  env $(env_for "$1") valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    "$CLIENT" --mode rr --port "$PORT" --count "$2" --warmup 0 >/dev/null 2>"$WORK/cg.err" ||
    { cat "$WORK/cg.err" >&2; die "callgrind run of $1 failed"; }
  stop_server
  grep -m1 '^summary:' "$WORK/cg.out" | awk '{print $2}'
}
IR_SHORT=1000 IR_LONG=5000
declare -A IRPT
if [[ $have_valgrind -eq 1 ]]; then
  for c in "${CONFIGS[@]}"; do
    a=$(ir "$c" $IR_SHORT)
    b=$(ir "$c" $IR_LONG)
    IRPT[$c]=$(((b - a) / (IR_LONG - IR_SHORT)))
  done
fi

base_tps=$(median <"$WORK/kernel.tps")
base_cps=$(median <"$WORK/kernel.cps")
pct() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.2f %%", (a - b) / b * 100}'; }
echo "| configuration | RR transactions/s (median, range) | vs kernel | RR p50 µs | client instructions / RR | connect()/s (median, range) | vs kernel |"
echo "|---|---|---|---|---|---|---|"
for c in "${CONFIGS[@]}"; do
  tps=$(median <"$WORK/$c.tps")
  cps=$(median <"$WORK/$c.cps")
  printf '| %s | %.0f (%s) | %s | %s | %s | %.0f (%s) | %s |\n' "$c" "$tps" \
    "$(awk '{printf "%.0f\n", $1}' "$WORK/$c.tps" | range)" "$(pct "$tps" "$base_tps")" \
    "$(median <"$WORK/$c.p50")" "${IRPT[$c]:-n/a}" "$cps" \
    "$(awk '{printf "%.0f\n", $1}' "$WORK/$c.cps" | range)" "$(pct "$cps" "$base_cps")"
done
[[ $have_valgrind -eq 1 ]] || echo "(valgrind not installed: no instruction counts)"
echo
if [[ -x $DECISION ]]; then
  echo "Routing decision alone (RoutingPolicy::ForConnect / ForBind, xsock-decision-bench):"
  echo
  echo '```'
  min_time=0.3
  [[ $QUICK -eq 1 ]] && min_time=0.05
  "$DECISION" --benchmark_min_time=$min_time 2>/dev/null | grep -E '^(BM_|Benchmark|-)'
  echo '```'
else
  echo "(xsock-decision-bench not built: needs libbenchmark-dev)"
fi
