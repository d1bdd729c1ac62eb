# Shared helpers for the compatibility matrix (tests/compat): unmodified Debian programs
# run under libxsock.so inside an isolated network namespace (`unshare -n`: nothing in it,
# not even an up loopback, so the only way out is xsockd), their peers on the host.
#
# Builds on ../integration/lib.sh (private $WORK, start_xsockd, fail, show_file,
# expect_status, BACKGROUND_PIDS, the EXIT trap) and adds:
#   require_programs PROG...         fail (not skip) when a Debian program is missing
#   debian_version PKG               the installed package's version, for the logs
#   compat_start_xsockd              start_xsockd (nothing in plain mode)
#   in_ns CMD...                     run CMD in the isolated namespace with the preload;
#                                    $ROUTE (XSOCK_ROUTE) is read when CMD starts
#   on_host CMD...                   run CMD on the host (tagged, see below)
#   start_ns NAME CMD...             background server in the namespace   (sets BG_PID)
#   start_host NAME CMD...           background server on the host        (sets BG_PID)
#                                    (output in $WORK/NAME.log)
#   listening PORT                   a TCP listener on PORT shows in the host namespace
#   wait_listening PORT [PID] [S]    until it does; fails if PID exits first
#   expect_port_free PORT            fail early if something already uses PORT
#   make_random_file FILE MIB        random contents
#   sha256_of FILE
#   expect_same_file WHAT WANT GOT   sizes and sha256 equal, else fail
#   counters NAME                    snapshot of xsockd's counters ($WORK/counters.NAME)
#   expect_counter_grew A B NAME MIN counter NAME grew by >= MIN from snapshot A to B
#   stop_bg PID                      SIGTERM the process and its descendants, then KILL
#   on_cleanup CMD...                extra clean-up step run by the EXIT trap
#   fail_with_logs REASON FILE...    show the files (server logs), then fail
#
# XSOCK_COMPAT_PLAIN=1 runs the same script against the plain kernel: in_ns/start_ns run
# their command in the host namespace without the preload and xsockd is not started.
# It exists to develop and check a script itself; CI never sets it.
# XSOCK_COMPAT_KEEP=DIR keeps the work directory's logs (not the big data files) in DIR.
# XSOCK_COMPAT_STRACE=1 wraps namespace commands in `strace -f -tt` (output kept in
# $WORK/strace.*, the end of each shown by fail_with_logs) to diagnose a failure.
#
# Every process a test starts carries XSOCK_COMPAT_TAG=$WORK in its environment; the
# EXIT trap kills the recorded processes, their descendants and anything still carrying
# the tag (daemons that re-exec or fork away from their parent, e.g. sshd's sessions).
# Ports: each script uses fixed ports of its own (listed in README.md) and checks them
# with expect_port_free first.

LIB_REQUIRED=${LIB_REQUIRED:-XSOCKD XSOCK_LIB XSOCK_STATS PYTHON3}
# shellcheck source=../integration/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../integration/lib.sh"

COMPAT_PLAIN=${XSOCK_COMPAT_PLAIN:-0}
COMPAT_STRACE=${XSOCK_COMPAT_STRACE:-0}
CLEANUP_HOOKS=()
BG_PID=
declare -A BG_LOGS=()  # pid -> output file of the background programs

# require_programs PROG...: every program must be installed (tools/setup-deps.sh installs
# them); a missing one is a failure, not a skip, so CI cannot pass without running it.
require_programs() {
  local p missing=()
  for p in "$@"; do
    command -v "$p" >/dev/null 2>&1 || [[ -x $p ]] || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] ||
    fail "missing programs: ${missing[*]} (install them with tools/setup-deps.sh)"
}

# debian_version PKG: the installed version (for the logs and README's matrix).
debian_version() {
  dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"
}

# compat_start_xsockd [ARGS...]: start_xsockd, except in plain mode.
compat_start_xsockd() {
  if [[ $COMPAT_PLAIN == 1 ]]; then
    log "plain mode (XSOCK_COMPAT_PLAIN=1): no xsockd, no preload, no namespace"
    return 0
  fi
  start_xsockd "$@"
}

# ns_command NAME CMD...: sets NS_CMD to the argv that runs CMD in the isolated namespace
# with the preload and $ROUTE (or plainly, in plain mode); NAME names the strace file.
ns_command() {
  local name=$1; shift
  local -a pre=()
  if [[ $COMPAT_STRACE == 1 ]]; then
    pre=(strace -f -tt -s 128 -o "$WORK/strace.$name")
  fi
  if [[ $COMPAT_PLAIN == 1 ]]; then
    NS_CMD=(env XSOCK_COMPAT_TAG="$WORK" "${pre[@]}" "$@")
  else
    # strace, when used, runs inside the namespace without the preload; the env after
    # it gives the preload to the traced program only.
    NS_CMD=(unshare -n -- env XSOCK_COMPAT_TAG="$WORK" "${pre[@]}"
            env LD_PRELOAD="$XSOCK_LIB" XSOCK_SOCKET="$SOCK" XSOCK_ROUTE="$ROUTE" "$@")
  fi
}

# in_ns CMD...: runs CMD (foreground) in the isolated namespace through xsockd. Callers
# bound it: in_ns timeout -k 5 60 prog ...
in_ns() {
  ns_command "fg.$RANDOM" "$@"
  "${NS_CMD[@]}"
}

# on_host CMD...: runs CMD (foreground) on the host, tagged for the clean-up sweep.
on_host() {
  env XSOCK_COMPAT_TAG="$WORK" "$@"
}

# start_host NAME CMD...: starts CMD in the background on the host, stdout and stderr to
# $WORK/NAME.log; sets BG_PID and records it for clean-up.
start_host() {
  local name=$1; shift
  env XSOCK_COMPAT_TAG="$WORK" "$@" >"$WORK/$name.log" 2>&1 &
  BG_PID=$!
  BACKGROUND_PIDS+=("$BG_PID")
  BG_LOGS[$BG_PID]=$WORK/$name.log
  log "started $name on the host: pid $BG_PID: $*"
}

# start_ns NAME CMD...: the same in the isolated namespace through xsockd (unshare and
# env exec, so BG_PID is the program's own pid).
start_ns() {
  local name=$1; shift
  ns_command "$name" "$@"
  "${NS_CMD[@]}" >"$WORK/$name.log" 2>&1 &
  BG_PID=$!
  BACKGROUND_PIDS+=("$BG_PID")
  BG_LOGS[$BG_PID]=$WORK/$name.log
  log "started $name in the namespace: pid $BG_PID: $*"
}

# listening PORT: true if a TCP socket listens on PORT in the host namespace. Checked
# with ss rather than by connecting, which would cost the server a connection (an inetd
# would spawn a daemon, `iperf3 -s -1` would take it for its one test).
listening() {
  [[ -n $(ss -Hltn "sport = :$1" 2>/dev/null) ]]
}

# expect_port_free PORT: fails if PORT is already in use on the host.
expect_port_free() {
  if listening "$1"; then
    fail "port $1 is already in use on the host: $(ss -Hltnp "sport = :$1" | tr '\n' ' ')"
  fi
}

# wait_listening PORT [PID [SECONDS]]: waits (at most SECONDS, default 15) until a
# listener on PORT shows in the host namespace (through xsockd, the host listener is
# xsockd's); fails at once if PID, the server that should listen, has exited.
wait_listening() {
  local port=$1 pid=${2:-} secs=${3:-15} i
  for ((i = 0; i < secs * 20; i++)); do
    listening "$port" && { log "port $port is listening"; return 0; }
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null
      fail_with_logs "the server (pid $pid) meant to listen on port $port exited with status $?" \
        ${BG_LOGS[$pid]:+"${BG_LOGS[$pid]}"}
    fi
    sleep 0.05
  done
  fail_with_logs "nothing listens on port $port after $secs s" ${pid:+${BG_LOGS[$pid]:+"${BG_LOGS[$pid]}"}}
}

# make_random_file FILE MIB
make_random_file() {
  head -c "$(($2 * 1024 * 1024))" /dev/urandom >"$1" || fail "cannot write $1"
}

sha256_of() {
  sha256sum <"$1" | cut -d' ' -f1
}

# expect_same_file WHAT WANT GOT: GOT must exist with WANT's size and sha256.
expect_same_file() {
  local what=$1 want=$2 got=$3
  [[ -f $got ]] || fail "$what: $got does not exist"
  local ws gs wh gh
  ws=$(stat -c %s "$want"); gs=$(stat -c %s "$got")
  [[ $ws -eq $gs ]] || fail "$what: $gs bytes, expected $ws"
  wh=$(sha256_of "$want"); gh=$(sha256_of "$got")
  [[ $wh == "$gh" ]] || fail "$what: sha256 $gh, expected $wh"
  log "$what: $gs bytes, sha256 $gh equal"
}

# descendants PID: prints PID's descendants (children first-level, then theirs), from the
# parent pids in /proc.
descendants() {
  local -a queue=("$1")
  local p
  while [[ ${#queue[@]} -gt 0 ]]; do
    p=${queue[0]}; queue=("${queue[@]:1}")
    local c
    for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do
      echo "$c"; queue+=("$c")
    done
  done
}

# tagged_pids: every process whose environment carries this test's tag.
tagged_pids() {
  local f pid
  for f in /proc/[0-9]*/environ; do
    pid=${f#/proc/}; pid=${pid%/environ}
    [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
    grep -qzxF "XSOCK_COMPAT_TAG=$WORK" "$f" 2>/dev/null && echo "$pid"
  done
}

# stop_bg PID: SIGTERM to PID and its descendants, SIGKILL to what is left after 3 s.
stop_bg() {
  local pid=$1 i
  local -a all
  mapfile -t all < <(echo "$pid"; descendants "$pid")
  kill -TERM "${all[@]}" 2>/dev/null
  for ((i = 0; i < 60; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL "${all[@]}" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

# on_cleanup CMD...: run CMD (a word list, not eval'd) at exit, before WORK is removed.
on_cleanup() {
  local q
  printf -v q '%q ' "$@"
  CLEANUP_HOOKS+=("$q")
}

# counters NAME: xsockd's counters now, into $WORK/counters.NAME (nothing in plain mode).
counters() {
  [[ $COMPAT_PLAIN == 1 ]] && return 0
  stats_snapshot "$WORK/counters.$1"
}

# expect_counter_grew FROM TO COUNTER MIN: xsockd's COUNTER grew by at least MIN between
# the snapshots FROM and TO: the traffic really went through xsockd (skipped in plain mode).
expect_counter_grew() {
  [[ $COMPAT_PLAIN == 1 ]] && return 0
  local delta
  delta=$(( $(stat_value "$WORK/counters.$2" "$3") - $(stat_value "$WORK/counters.$1" "$3") ))
  [[ $delta -ge $4 ]] || fail "xsockd's $3 grew by $delta between '$1' and '$2', expected >= $4"
  log "xsockd: $3 +$delta"
}

compat_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid
  local -a all=()
  for pid in "${BACKGROUND_PIDS[@]}"; do
    all+=("$pid")
    mapfile -t -O "${#all[@]}" all < <(descendants "$pid")
  done
  mapfile -t -O "${#all[@]}" all < <(tagged_pids)
  # Grouped so that bash's "Killed" job notices go nowhere.
  { [[ ${#all[@]} -gt 0 ]] && { kill -KILL "${all[@]}"; wait "${all[@]}"; }; } 2>/dev/null
  local h
  for h in "${CLEANUP_HOOKS[@]}"; do
    eval "$h" >/dev/null 2>&1
  done
  # A second sweep for anything the hooks or a dying parent left.
  mapfile -t all < <(tagged_pids)
  [[ ${#all[@]} -gt 0 ]] && kill -KILL "${all[@]}" 2>/dev/null
  # XSOCK_COMPAT_KEEP=DIR: keep the logs and traces (files under 10 MiB) for diagnosis.
  if [[ -n ${XSOCK_COMPAT_KEEP:-} ]]; then
    local keep
    keep=$XSOCK_COMPAT_KEEP/$(basename "$WORK")
    mkdir -p "$keep" && (cd "$WORK" && find . -type f -size -10M -exec cp --parents {} "$keep" \;)
    echo "$TEST_NAME: logs kept in $keep"
  fi
  (exit "$rc")
  cleanup
}
trap compat_cleanup EXIT

# fail_with_logs REASON FILE...: shows each file (server logs) then fails.
fail_with_logs() {
  local reason=$1 f; shift
  for f in "$@"; do show_file "$(basename "$f")" "$f"; done
  if [[ $COMPAT_STRACE == 1 ]]; then
    for f in "$WORK"/strace.*; do
      [[ -f $f ]] && { echo "---- $(basename "$f") (last 40 lines) ----"; tail -n 40 "$f"; }
    done
  fi
  fail "$reason"
}
