#!/usr/bin/env bash
# curl, inside a network namespace with no network at all, downloads a 100 MiB random file
# from an HTTP server on the host's 127.0.0.1 through xsockd. The file must arrive intact
# (sha256) and xsockd must have carried every byte (bytes_from_host >= file size).
source "$(dirname "$0")/lib.sh"
require_root_and_netns

size=$((100 * 1024 * 1024))
mkdir -p "$WORK/www"
head -c "$size" /dev/urandom >"$WORK/www/blob" || fail "cannot make the test file"
want=$(sha256sum <"$WORK/www/blob" | cut -d' ' -f1)

start_xsockd

# The server runs in the host namespace; -u so its "Serving HTTP on ... port N" line is
# written at once.
"$PYTHON3" -u -m http.server 0 --bind 127.0.0.1 --directory "$WORK/www" \
  >"$WORK/http.out" 2>&1 &
BACKGROUND_PIDS+=($!)
port=
for ((i = 0; i < 100; i++)); do
  port=$(sed -n 's/^Serving HTTP on 127\.0\.0\.1 port \([0-9]*\).*/\1/p' "$WORK/http.out")
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n $port ]] || { show_file "http.server output" "$WORK/http.out"; fail "http.server did not start"; }
log "http.server on 127.0.0.1:$port"

stats_snapshot "$WORK/before"
log "curl in unshare -n through xsockd"
routed timeout -k 5 120 curl --noproxy '*' --silent --show-error --fail --max-time 100 \
  --speed-limit 1 --speed-time 15 \
  -o "$WORK/got" "http://127.0.0.1:$port/blob" >"$WORK/curl.out" 2>&1
rc=$?
stats_snapshot "$WORK/after"
if [[ $rc -ne 0 ]]; then
  show_file "http.server output" "$WORK/http.out"
  expect_status "curl" 0 "$rc" "$WORK/curl.out"
fi
[[ -s $WORK/curl.out ]] && show_file "curl output" "$WORK/curl.out"

got_size=$(stat -c %s "$WORK/got")
got=$(sha256sum <"$WORK/got" | cut -d' ' -f1)
log "downloaded $got_size bytes, sha256 $got"
[[ $got_size -eq $size ]] || fail "downloaded $got_size bytes, expected $size"
[[ $got == "$want" ]] || fail "sha256 $got, expected $want"

from_host=$(( $(stat_value "$WORK/after" bytes_from_host) - $(stat_value "$WORK/before" bytes_from_host) ))
connects=$(( $(stat_value "$WORK/after" connects_ok) - $(stat_value "$WORK/before" connects_ok) ))
log "xsockd: bytes_from_host +$from_host, connects_ok +$connects"
[[ $from_host -ge $size ]] || fail "xsockd carried $from_host bytes from the host, expected >= $size"
[[ $connects -ge 1 ]] || fail "xsockd counted no successful connect"
log "PASS"
