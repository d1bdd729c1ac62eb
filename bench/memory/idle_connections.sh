#!/usr/bin/env bash
# Memory per idle routed connection in xsockd: RSS, PSS (anonymous and shared memory, the
# memfd rings included) and descriptors of xsockd with N idle routed connections open,
# against the same xsockd with none. A python3 client under libxsock.so opens N routed
# connections to a python3 server on 127.0.0.1 and holds them; nothing is sent.
#
#   bench/memory/idle_connections.sh [BUILD_DIR] [N]      (defaults: build, 1000)
#   XSOCKD=... LIBXSOCK=... to use other binaries; RING_ORDER=16 for 64 KiB rings.
#
# Prints one table and one JSON line (prefix "json: "). Root is not needed. Every wait is
# bounded; processes and the temporary directory are removed on every exit path.
set -uo pipefail
build=${1:-build}
n=${2:-1000}
root=$(cd "$(dirname "$0")/../.." && pwd)
XSOCKD=${XSOCKD:-$root/$build/backend/xsockd}
LIBXSOCK=${LIBXSOCK:-$root/$build/libintercept/libxsock.so}
ring_order=${RING_ORDER:-18}
for f in "$XSOCKD" "$LIBXSOCK"; do
  [[ -f $f ]] || { echo "idle_connections: $f not found (build it first)" >&2; exit 1; }
done
[[ $n =~ ^[0-9]+$ && $n -ge 1 && $n -le 20000 ]] || { echo "N must be 1..20000" >&2; exit 2; }
# xsockd holds 4 descriptors per connection (host socket, channel end, memfd, plus the
# server's accepted end lives in the python server); give everyone room.
ulimit -n $((n * 6 + 1024)) 2>/dev/null || ulimit -n "$(ulimit -Hn)"

work=$(mktemp -d "${TMPDIR:-/tmp}/xsock-bench-mem.XXXXXX") || exit 1
pids=()
cleanup() {
  exec 8>&- 2>/dev/null
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$XSOCKD" --socket "$work/xsockd.sock" --admin-socket none --ring-order "$ring_order" -q \
  >"$work/xsockd.log" 2>&1 &
xpid=$!
pids+=("$xpid")
for ((i = 0; i < 200; i++)); do [[ -S $work/xsockd.sock ]] && break; sleep 0.05; done
[[ -S $work/xsockd.sock ]] || { cat "$work/xsockd.log"; echo "xsockd did not start" >&2; exit 1; }

cat >"$work/server.py" <<'PY'
import socket, sys
n = int(sys.argv[1])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 0)); l.listen(4096)
print(l.getsockname()[1], flush=True)
held = []
while len(held) < n:
    held.append(l.accept()[0])
print("all", flush=True)
sys.stdin.read()
PY
cat >"$work/client.py" <<'PY'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
print("ready", flush=True)
sys.stdin.read()
PY
mkfifo "$work/server.in" "$work/client.in"
python3 -u "$work/server.py" "$n" <"$work/server.in" >"$work/server.out" 2>&1 &
pids+=($!)
exec 8>"$work/server.in"
for ((i = 0; i < 100; i++)); do
  port=$(head -n 1 "$work/server.out" 2>/dev/null)
  [[ $port =~ ^[0-9]+$ ]] && break
  sleep 0.05
done
[[ ${port:-} =~ ^[0-9]+$ ]] || { cat "$work/server.out"; echo "server did not start" >&2; exit 1; }

# "rss pss pss_anon pss_shmem fds" of xsockd (kB, kB, kB, kB, count).
measure() {
  awk '/^Rss:/ {r=$2} /^Pss:/ {p=$2} /^Pss_Anon:/ {a=$2} /^Pss_Shmem:/ {s=$2}
       END {printf "%d %d %d %d", r, p, a, s}' "/proc/$xpid/smaps_rollup"
  echo " $(ls "/proc/$xpid/fd" | wc -l)"
}
shmem() { awk '/^Shmem:/ {print $2}' /proc/meminfo; }
# Kernel slab memory, system-wide: the sockets of xsockd *and* of the client and server
# (TCP sockets on both ends, channel pairs, memfd inodes); noisy on a busy machine.
slab() { awk '/^Slab:/ {print $2}' /proc/meminfo; }

sleep 0.2
read -r r0 p0 a0 s0 f0 < <(measure)
sh0=$(shmem)
sl0=$(slab)

env LD_PRELOAD="$LIBXSOCK" XSOCK_SOCKET="$work/xsockd.sock" XSOCK_ROUTE=127.0.0.0/8 \
  python3 -u "$work/client.py" "$port" "$n" <"$work/client.in" >"$work/client.out" 2>&1 &
cpid=$!
pids+=("$cpid")
exec 9>"$work/client.in"
for ((i = 0; i < 1200; i++)); do
  grep -q ready "$work/client.out" 2>/dev/null && break
  kill -0 "$cpid" 2>/dev/null || break
  sleep 0.05
done
grep -q ready "$work/client.out" || { cat "$work/client.out"; echo "client did not open $n connections" >&2; exit 1; }
sleep 0.5  # let xsockd settle (connect completions)
read -r r1 p1 a1 s1 f1 < <(measure)
sh1=$(shmem)
sl1=$(slab)
exec 9>&-

per() { awk -v d="$1" -v n="$n" 'BEGIN { printf "%.1f", d / n }'; }
ring_kib=$(( (1 << ring_order) / 1024 ))
printf 'xsockd, %d idle routed connections (rings 2 x %d KiB each, touched only where written)\n' "$n" "$ring_kib"
printf '%-22s %12s %12s %16s\n' metric "0 conns" "$n conns" "per connection"
printf '%-22s %12s %12s %16s\n' "RSS (kB)" "$r0" "$r1" "$(per $((r1 - r0)))"
printf '%-22s %12s %12s %16s\n' "PSS (kB)" "$p0" "$p1" "$(per $((p1 - p0)))"
printf '%-22s %12s %12s %16s\n' "PSS anon (kB)" "$a0" "$a1" "$(per $((a1 - a0)))"
printf '%-22s %12s %12s %16s\n' "PSS shmem/memfd (kB)" "$s0" "$s1" "$(per $((s1 - s0)))"
printf '%-22s %12s %12s %16s\n' "system Shmem (kB)" "$sh0" "$sh1" "$(per $((sh1 - sh0)))"
printf '%-22s %12s %12s %16s\n' "system Slab (kB)" "$sl0" "$sl1" "$(per $((sl1 - sl0)))"
printf '%-22s %12s %12s %16s\n' "descriptors" "$f0" "$f1" "$(per $((f1 - f0)))"
printf 'json: {"connections": %d, "ring_order": %d, "rss_kb_per_conn": %s, "pss_kb_per_conn": %s, "pss_anon_kb_per_conn": %s, "pss_shmem_kb_per_conn": %s, "system_shmem_kb_per_conn": %s, "system_slab_kb_per_conn": %s, "fds_per_conn": %s}\n' \
  "$n" "$ring_order" "$(per $((r1 - r0)))" "$(per $((p1 - p0)))" "$(per $((a1 - a0)))" \
  "$(per $((s1 - s0)))" "$(per $((sh1 - sh0)))" "$(per $((sl1 - sl0)))" "$(per $((f1 - f0)))"
