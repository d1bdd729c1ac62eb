#!/usr/bin/env bash
# Differential conformance suite: runs every scenario of xsock-conform twice, on kernel
# sockets and through xsock, and diffs what the two runs printed (README.md).
#
#   run.sh [--self-check] [--keep DIR] [SCENARIO...]
#
#   --self-check  run the kernel side twice instead (a scenario whose kernel output varies
#                 is not deterministic and must be fixed before it can judge xsock)
#   --keep DIR    keep every run's output under DIR
#
# meson passes CONFORM, XSOCKD, XSOCK_LIB, XSOCK_STATS. CONFORM_EXCEPTIONS names another
# exceptions file (what-if analyses; default: EXCEPTIONS.md next to this script).
# Prints one line per scenario, PASS / FAIL / EXCEPTION, then a digest of the failures and
# a summary; exits 1 on any FAIL.
# shellcheck disable=SC2034  # read by lib.sh
LIB_REQUIRED="XSOCKD XSOCK_LIB XSOCK_STATS CONFORM"
# shellcheck source=../integration/lib.sh disable=SC1091
source "$(dirname "$0")/../integration/lib.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
EXCEPTIONS_FILE=${CONFORM_EXCEPTIONS:-$HERE/EXCEPTIONS.md}  # override: what-if analyses
PROC_TIMEOUT=15      # seconds for each app/peer process
BUDGET=170           # seconds for the whole suite; scenarios left over count as failures
SELF_CHECK=0
KEEP=

selected=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --self-check) SELF_CHECK=1 ;;
    --keep) KEEP=$2; shift ;;
    -*) echo "usage: run.sh [--self-check] [--keep DIR] [SCENARIO...]" >&2; exit 2 ;;
    *) selected+=("$1") ;;
  esac
  shift
done

require_root_and_netns

# The xsock runs use fixed ports on the host's loopback: two suites at once (several
# build directories on one machine) would take each other's ports. Take turns.
LOCK_FILE=${TMPDIR:-/tmp}/xsock-conformance.lock
exec 9>"$LOCK_FILE" || fail "cannot open $LOCK_FILE"
if ! flock -n 9; then
  log "another conformance run holds $LOCK_FILE; waiting (at most 150 s)"
  flock -w 150 9 || fail "another conformance run held $LOCK_FILE for 150 s"
fi

# ---- the scenarios, with a sanity check of their ports ----
mapfile -t listing < <("$CONFORM" list) || fail "xsock-conform list failed"
[[ ${#listing[@]} -gt 0 ]] || fail "xsock-conform lists no scenario"
declare -A port_of=()
declare -A seen_port=()
all=()
for line in "${listing[@]}"; do
  read -r name port _ <<<"$line"
  [[ $port -ge 24000 && $port -le 24990 ]] || fail "scenario $name: base port $port outside 24000-24990"
  [[ -z ${seen_port[$port]:-} ]] || fail "scenarios $name and ${seen_port[$port]} share base port $port"
  seen_port[$port]=$name
  port_of[$name]=$port
  all+=("$name")
done
if [[ ${#selected[@]} -eq 0 ]]; then
  selected=("${all[@]}")
else
  for s in "${selected[@]}"; do
    [[ -n ${port_of[$s]:-} ]] || fail "no scenario named '$s'"
  done
fi

# ---- exceptions (EXCEPTIONS.md), two kinds of line:
#   exception SCENARIO :: ERE :: reason      lines matching ERE are left out of both outputs
#   rewrite SCENARIO|* :: SED-EXPR :: reason  sed -E SED-EXPR is applied to both outputs
# A scenario whose outputs differ but agree once its entries are applied is an EXCEPTION.
declare -A drop_re=()
declare -A sed_args=()
if [[ -f $EXCEPTIONS_FILE ]]; then
  while IFS= read -r line; do
    [[ $line =~ ^(exception|rewrite)[[:space:]]+([A-Za-z0-9_]+|\*)[[:space:]]+::[[:space:]]+(.*[^[:space:]])[[:space:]]+::[[:space:]]+[^[:space:]].*$ ]] ||
      fail "malformed line in EXCEPTIONS.md: $line"
    kind=${BASH_REMATCH[1]} scen=${BASH_REMATCH[2]} expr=${BASH_REMATCH[3]}
    [[ $scen == '*' || -n ${port_of[$scen]:-} ]] || fail "EXCEPTIONS.md names an unknown scenario: $scen"
    if [[ $kind == exception ]]; then
      [[ $scen != '*' ]] || fail "an 'exception' line must name one scenario: $line"
      drop_re[$scen]+="${drop_re[$scen]:+|}($expr)"
    else
      sed -E -e "$expr" </dev/null >/dev/null 2>&1 || fail "bad sed expression in EXCEPTIONS.md: $expr"
      sed_args[$scen]+=" -e $(printf '%q' "$expr")"
    fi
  done < <(grep -E '^(exception|rewrite)[[:space:]]' "$EXCEPTIONS_FILE")
fi

has_entries() { [[ -n ${drop_re[$1]:-}${sed_args[$1]:-}${sed_args['*']:-} ]]; }

# apply_exceptions NAME FILE: FILE with NAME's entries (and the '*' rewrites) applied.
apply_exceptions() {
  local script="${sed_args['*']:-}${sed_args[$1]:-}"
  local re=${drop_re[$1]:-}
  if [[ -n $script ]]; then
    eval "sed -E $script" <"$2"
  else
    cat "$2"
  fi | if [[ -n $re ]]; then grep -Ev -- "$re"; else cat; fi
}

# ---- running one side ----

# run_kernel NAME DIR: app and peer on kernel sockets in a fresh network namespace.
run_kernel() {
  mkdir -p "$2/sync"
  # shellcheck disable=SC2016  # expanded by the inner shell
  unshare -n -- bash -c '
    ip link set lo up || exit 90
    timeout -k 2 "$4" "$1" peer "$2" --sync "$3/sync" >"$3/peer.out" 2>"$3/peer.err" &
    p=$!
    timeout -k 2 "$4" "$1" app "$2" --sync "$3/sync" >"$3/app.out" 2>"$3/app.err"
    echo $? >"$3/app.rc"
    wait $p
    echo $? >"$3/peer.rc"' _ "$CONFORM" "$1" "$2" "$PROC_TIMEOUT"
}

# run_routed NAME DIR: the peer on the host's loopback, the app in an empty network
# namespace with libxsock.so preloaded: it reaches the peer only through xsockd.
run_routed() {
  mkdir -p "$2/sync"
  timeout -k 2 "$PROC_TIMEOUT" "$CONFORM" peer "$1" --sync "$2/sync" >"$2/peer.out" 2>"$2/peer.err" &
  local p=$!
  # shellcheck disable=SC2034  # lib.sh's cleanup kills these
  BACKGROUND_PIDS=("$p")
  timeout -k 2 "$PROC_TIMEOUT" unshare -n -- env LD_PRELOAD="$XSOCK_LIB" XSOCK_SOCKET="$SOCK" \
    XSOCK_ROUTE="$ROUTE" "$CONFORM" app "$1" --sync "$2/sync" >"$2/app.out" 2>"$2/app.err"
  echo $? >"$2/app.rc"
  wait "$p"
  echo $? >"$2/peer.rc"
  # shellcheck disable=SC2034
  BACKGROUND_PIDS=()
}

# render DIR: what is compared — both processes' lines and exit statuses.
render() {
  echo "== app (exit $(cat "$1/app.rc" 2>/dev/null))"
  cat "$1/app.out" 2>/dev/null
  echo "== peer (exit $(cat "$1/peer.rc" 2>/dev/null))"
  cat "$1/peer.out" 2>/dev/null
}

statuses_ok() {
  [[ $(cat "$1/app.rc" 2>/dev/null) == 0 && $(cat "$1/peer.rc" 2>/dev/null) == 0 ]]
}

show_stderr() {  # show_stderr LABEL DIR
  local f
  for f in "$2/app.err" "$2/peer.err"; do
    [[ -s $f ]] && { echo "   -- $1 $(basename "$f") --"; sed 's/^/   | /' "$f" | head -n 20; }
  done
}

# ---- main loop ----
if [[ $SELF_CHECK == 0 ]]; then
  start_xsockd
fi
base_label=kernel
other_label=$([[ $SELF_CHECK == 1 ]] && echo kernel-again || echo xsock)

start=$SECONDS
pass=0 failed=() excepted=() unneeded=()
for name in "${selected[@]}"; do
  dir=$WORK/$name
  if (( SECONDS - start > BUDGET )); then
    echo "FAIL      $name: not run, the suite's ${BUDGET}s budget is spent"
    failed+=("$name")
    continue
  fi
  run_kernel "$name" "$dir/$base_label"
  if [[ $SELF_CHECK == 1 ]]; then
    run_kernel "$name" "$dir/$other_label"
  else
    run_routed "$name" "$dir/$other_label"
  fi
  render "$dir/$base_label" >"$dir/$base_label.txt"
  render "$dir/$other_label" >"$dir/$other_label.txt"

  problem=
  statuses_ok "$dir/$base_label" || problem="the $base_label run exited non-zero or timed out (statuses in the diff)"
  statuses_ok "$dir/$other_label" || problem="${problem:+$problem; }the $other_label run exited non-zero or timed out"
  if [[ $SELF_CHECK == 0 ]] && ! kill -0 "$XSOCKD_PID" 2>/dev/null; then
    problem="${problem:+$problem; }xsockd died during this scenario (restarted for the next one)"
    show_xsockd_log
    wait "$XSOCKD_PID" 2>/dev/null
    XSOCKD_PID=
    start_xsockd
  fi

  verdict=PASS
  if ! cmp -s "$dir/$base_label.txt" "$dir/$other_label.txt"; then
    verdict=FAIL
    if [[ $SELF_CHECK == 0 ]] && has_entries "$name" &&
       cmp -s <(apply_exceptions "$name" "$dir/$base_label.txt") \
              <(apply_exceptions "$name" "$dir/$other_label.txt"); then
      verdict=EXCEPTION
    fi
  elif [[ $SELF_CHECK == 0 && ( -n ${drop_re[$name]:-} || -n ${sed_args[$name]:-} ) ]]; then
    unneeded+=("$name")
  fi
  [[ -n $problem ]] && verdict=FAIL

  case $verdict in
    PASS) echo "PASS      $name"; pass=$((pass + 1)) ;;
    EXCEPTION) echo "EXCEPTION $name (differences all listed in EXCEPTIONS.md)"; excepted+=("$name") ;;
    FAIL)
      echo "FAIL      $name${problem:+: $problem}"
      diff -u --label "$base_label" --label "$other_label" "$dir/$base_label.txt" "$dir/$other_label.txt" |
        sed 's/^/   /'
      show_stderr "$base_label" "$dir/$base_label"
      show_stderr "$other_label" "$dir/$other_label"
      failed+=("$name")
      # meson shows only the end of a long log: a digest of every failure goes there too.
      {
        echo "$name${problem:+ ($problem)}:"
        diff "$dir/$base_label.txt" "$dir/$other_label.txt" | grep -E '^[<>]' |
          sed -e "s/^< /  $base_label: /" -e "s/^> /  $other_label: /" | head -n 6
      } >>"$WORK/digest"
      ;;
  esac
done

if [[ -n $KEEP ]]; then
  mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ && echo "outputs kept in $KEEP"
fi
if [[ -s $WORK/digest ]]; then
  echo "---- digest of the failures (differing lines, at most 6 each; full diffs above) ----"
  cat "$WORK/digest"
fi
for n in "${unneeded[@]}"; do
  echo "note: $n passes without its EXCEPTIONS.md entries; remove them"
done
echo "conformance: ${#selected[@]} scenarios, $pass passed, ${#excepted[@]} passed with listed exceptions, ${#failed[@]} failed ($((SECONDS - start)) s)"
[[ ${#failed[@]} -eq 0 ]] || { echo "failed: ${failed[*]}"; exit 1; }
exit 0
