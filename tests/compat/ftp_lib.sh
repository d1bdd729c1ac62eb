# shellcheck shell=bash
# The client half of the FTP servers' tests (vsftpd.sh, proftpd.sh), sourced after
# lib.sh: curl on the host drives an anonymous session against a server in the isolated
# namespace, in passive mode only (the server binds and listens a data port on the address
# of its control connection — which getsockname() of the accepted, routed control socket
# reports as the host-side 127.0.0.1 — and the client connects to it).
#
#   ftp_round_trip PORT SERVER_DIR MIB LOGS...
#
# uploads two MIB MiB random files into /pub/ (one with EPSV, one with PASV, whose reply
# carries the server's idea of its own address), checks them byte for byte in SERVER_DIR
# (the server's pub directory), lists /pub/ (a LIST data connection), and downloads both
# back the other way round (PASV, then EPSV), checking the hashes. LOGS are shown on
# failure.

# ftp_curl WHAT LOGS_VAR CURL_ARGS...: curl on the host, bounded; fails with the logs.
ftp_curl() {
  local what=$1; shift
  local -n _logs=$1; shift
  on_host timeout -k 5 40 curl --noproxy '*' -sS --max-time 30 --ftp-pasv "$@" \
    >>"$WORK/curl.out" 2>>"$WORK/curl.err"
  local rc=$?
  [[ $rc -eq 0 ]] || fail_with_logs "$what: curl exited $rc" "$WORK/curl.err" "${_logs[@]}"
}

ftp_round_trip() {
  local port=$1 server_dir=$2 mib=$3; shift 3
  local -a logs=("$@")
  local url=ftp://127.0.0.1:$port/pub
  make_random_file "$WORK/up-epsv.bin" "$mib"
  make_random_file "$WORK/up-pasv.bin" "$mib"
  counters ftp-before

  ftp_curl "upload (EPSV)" logs -T "$WORK/up-epsv.bin" "$url/up-epsv.bin"
  expect_same_file "upload (EPSV), as stored by the server" "$WORK/up-epsv.bin" "$server_dir/up-epsv.bin"
  ftp_curl "upload (PASV)" logs --disable-epsv -T "$WORK/up-pasv.bin" "$url/up-pasv.bin"
  expect_same_file "upload (PASV), as stored by the server" "$WORK/up-pasv.bin" "$server_dir/up-pasv.bin"

  ftp_curl "list of /pub/" logs --list-only -o "$WORK/list.out" "$url/"
  if ! grep -qx 'up-epsv.bin' "$WORK/list.out" || ! grep -qx 'up-pasv.bin' "$WORK/list.out"; then
    fail_with_logs "the listing of /pub/ lacks the uploaded files" "$WORK/list.out" "${logs[@]}"
  fi
  log "list of /pub/: $(tr '\n' ' ' <"$WORK/list.out")"

  ftp_curl "download (PASV)" logs --disable-epsv -o "$WORK/down-epsv.bin" "$url/up-epsv.bin"
  expect_same_file "download (PASV)" "$WORK/up-epsv.bin" "$WORK/down-epsv.bin"
  ftp_curl "download (EPSV)" logs -o "$WORK/down-pasv.bin" "$url/up-pasv.bin"
  expect_same_file "download (EPSV)" "$WORK/up-pasv.bin" "$WORK/down-pasv.bin"
  # Both directions went through xsockd (nothing else can leave the namespace).
  counters ftp-after
  expect_counter_grew ftp-before ftp-after bytes_from_host $((2 * mib * 1024 * 1024))
  expect_counter_grew ftp-before ftp-after bytes_to_host $((2 * mib * 1024 * 1024))
  rm -f "$WORK"/up-*.bin "$WORK"/down-*.bin
}
