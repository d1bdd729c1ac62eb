#!/usr/bin/env bash
# curl, unmodified, in the isolated namespace: uploads a 50 MiB random file with
# `curl -T` (HTTP PUT, Expect: 100-continue) to an HTTP/1.1 server on the host's
# 127.0.0.1:22040 (upload_server.py, which stores the body and answers with the sha256 it
# received), then downloads it back. Both hashes must equal the original, and xsockd's
# counters must show the bytes going each way.
# The plain 100 MiB download from `python3 -m http.server` is
# tests/integration/curl_download.sh; this test adds the upload direction.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
require_programs curl

port=22040
size_mib=50
expect_port_free "$port"
log "curl $(debian_version curl)"

mkdir -p "$WORK/www"
make_random_file "$WORK/upload.bin" "$size_mib"
want=$(sha256_of "$WORK/upload.bin")

compat_start_xsockd
start_host upload-server "$PYTHON3" -u "$(dirname "$0")/upload_server.py" "$WORK/www" "$port"
server=$BG_PID
wait_listening "$port" "$server"
ROUTE='127.0.0.0/8'
curl_opts=(--noproxy '*' --silent --show-error --fail --max-time 60
           --speed-limit 1 --speed-time 15)

counters before
in_ns timeout -k 5 70 curl "${curl_opts[@]}" -T "$WORK/upload.bin" \
  -w 'http %{http_code} sent %{size_upload}\n' \
  "http://127.0.0.1:$port/stored.bin" >"$WORK/put.out" 2>&1
rc=$?
counters uploaded
[[ $rc -eq 0 ]] || fail_with_logs "curl -T exited $rc" "$WORK/put.out" "$WORK/upload-server.log"
log "upload: $(tr '\n' ' ' <"$WORK/put.out")"
grep -qxF "sha256 $want $((size_mib * 1024 * 1024))" "$WORK/put.out" ||
  fail_with_logs "the server received something else (want sha256 $want)" "$WORK/put.out"
grep -qxF "http 201 sent $((size_mib * 1024 * 1024))" "$WORK/put.out" ||
  fail_with_logs "curl did not report a 201 after sending the whole file" "$WORK/put.out"
expect_same_file "upload stored by the server" "$WORK/upload.bin" "$WORK/www/stored.bin"
expect_counter_grew before uploaded bytes_to_host $((size_mib * 1024 * 1024))

in_ns timeout -k 5 70 curl "${curl_opts[@]}" -o "$WORK/downloaded.bin" \
  "http://127.0.0.1:$port/stored.bin" >"$WORK/get.out" 2>&1
rc=$?
counters downloaded
[[ $rc -eq 0 ]] || fail_with_logs "curl download exited $rc" "$WORK/get.out" "$WORK/upload-server.log"
expect_same_file "download of the uploaded file" "$WORK/upload.bin" "$WORK/downloaded.bin"
expect_counter_grew uploaded downloaded bytes_from_host $((size_mib * 1024 * 1024))

stop_bg "$server"
log "PASS"
