#!/usr/bin/env bash
# The main job, end to end: install what is missing, build, start xsockd, and run an
# unmodified `curl` inside a network namespace that has no network at all; its connection
# to a web server on the host's 127.0.0.1 is carried by libxsock.so and xsockd over
# shared-memory rings. Prints what curl got and what xsockd saw. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash tools/setup-deps.sh

echo "== building (build/)"
if [[ ! -f build/build.ninja ]]; then
  meson setup build >/dev/null
fi
ninja -C build >/dev/null
lib=$root/build/libintercept/libxsock.so
xsockd=$root/build/backend/xsockd
stats=$root/build/tools/xsock-stats

work=$(mktemp -d /tmp/xsock-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

sock=$work/xsockd.sock
echo "== starting xsockd on $sock"
"$xsockd" --socket "$sock" 2>"$work/xsockd.log" &
pids+=($!)
for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
[[ -S $sock ]] || { echo "xsockd did not start:"; cat "$work/xsockd.log"; exit 1; }

mkdir "$work/www"
printf 'Hello from the host, served to a namespace with no network.\n' >"$work/www/hello.txt"
head -c 20000000 /dev/urandom >"$work/www/blob.bin"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >"$work/http.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.05; done

url=http://127.0.0.1:$port
echo
echo "== without xsock: curl in 'unshare -n' (no network) fails, as it should"
unshare -n curl -sS --max-time 5 "$url/hello.txt" 2>&1 | sed 's/^/   /' || true

echo
echo "== with xsock: the same curl, unmodified, routed through xsockd"
echo "   LD_PRELOAD=$lib XSOCK_ROUTE=127.0.0.0/8 unshare -n curl $url/hello.txt"
env LD_PRELOAD="$lib" XSOCK_SOCKET="$sock" XSOCK_ROUTE=127.0.0.0/8 \
  unshare -n curl -sS --max-time 20 "$url/hello.txt" | sed 's/^/   /'

echo
echo "== a 20 MB download through xsock, checked by sha256"
want=$(sha256sum <"$work/www/blob.bin" | cut -d' ' -f1)
got=$(env LD_PRELOAD="$lib" XSOCK_SOCKET="$sock" XSOCK_ROUTE=127.0.0.0/8 \
  unshare -n curl -sS --max-time 60 "$url/blob.bin" | sha256sum | cut -d' ' -f1)
echo "   host file: $want"
echo "   via xsock: $got"
[[ $want == "$got" ]] && echo "   identical" || { echo "   MISMATCH"; exit 1; }

echo
echo "== what xsockd saw (its log)"
sed 's/^/   /' "$work/xsockd.log"
echo
echo "== xsockd counters (xsock-stats)"
"$stats" --socket "$sock" | sed 's/^/   /'
