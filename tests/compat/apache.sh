#!/usr/bin/env bash
# Apache httpd (Debian's apache2, unmodified), the real multi-process server, once with
# the prefork MPM and once with the event MPM, in the isolated namespace: it listens on
# 0.0.0.0:PORT through xsockd (XSOCK_ROUTE 0.0.0.0/0:PORT selects the routed bind) with
# `AcceptFilter http data` (TCP_DEFER_ACCEPT on the listener) and `EnableSendfile On`.
# The listener is inherited by the children (prefork: processes each blocking in accept;
# event: threads polling it with epoll), so the accepted connections come out of the
# listener channel in several processes. From the host, curl fetches a small page and a
# 50 MiB file, then 8 clients fetch the big file at once; every body is compared (sha256),
# and the access log must show each request with the peer and local address the
# connection really had (getpeername/getsockname of an accepted routed socket).
# Private ServerRoot, config, PidFile, ErrorLog, DocumentRoot and mutex directory: nothing
# under /etc/apache2 is used.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
require_programs apache2 curl

prefork_port=23080
event_port=23081
big_mib=50
parallel=8
modules=/usr/lib/apache2/modules
log "apache2 $(debian_version apache2)"

# The children run as www-data: they must reach the document root (mktemp made WORK 0700).
chmod 755 "$WORK"
docroot=$WORK/htdocs
mkdir -p "$docroot"
printf 'xsock compat: apache small page\n' >"$docroot/small.txt"
make_random_file "$docroot/big.bin" "$big_mib"
chmod 644 "$docroot"/*

# write_conf DIR PORT MPM: an httpd.conf for one MPM in DIR.
write_conf() {
  local dir=$1 port=$2 mpm=$3 mpm_conf
  mkdir -p "$dir"
  chmod 755 "$dir"
  if [[ $mpm == prefork ]]; then
    mpm_conf="StartServers 3
MinSpareServers 2
MaxSpareServers 6
ServerLimit 16
MaxRequestWorkers 16"
  else
    mpm_conf="StartServers 2
ServerLimit 2
ThreadsPerChild 8
MaxRequestWorkers 16
MinSpareThreads 4
MaxSpareThreads 16"
  fi
  cat >"$dir/httpd.conf" <<EOF
ServerRoot "$dir"
ServerName 127.0.0.1
Listen 0.0.0.0:$port
PidFile $dir/httpd.pid
ErrorLog $dir/error.log
LogLevel info
DefaultRuntimeDir $dir
Mutex file:$dir default
LoadModule mpm_${mpm}_module $modules/mod_mpm_${mpm}.so
LoadModule authz_core_module $modules/mod_authz_core.so
User www-data
Group www-data
$mpm_conf
DocumentRoot $docroot
<Directory />
  Require all denied
</Directory>
<Directory $docroot>
  Require all granted
</Directory>
EnableSendfile On
EnableMMAP Off
AcceptFilter http data
KeepAlive On
# peer address, local address and port, status, body bytes, path
LogFormat "%a %A %{local}p %>s %B %U" compat
CustomLog $dir/access.log compat
EOF
}

big_sha=$(sha256_of "$docroot/big.bin")
big_size=$(stat -c %s "$docroot/big.bin")
small_size=$(stat -c %s "$docroot/small.txt")

# expect_big WHAT FILE: FILE is a copy of big.bin (size and sha256; hashed once up front).
expect_big() {
  local size sha
  size=$(stat -c %s "$2" 2>/dev/null || echo missing)
  [[ $size == "$big_size" ]] || fail "$1: $size bytes, expected $big_size"
  sha=$(sha256_of "$2")
  [[ $sha == "$big_sha" ]] || fail "$1: sha256 $sha, expected $big_sha"
  log "$1: $size bytes, sha256 equal"
}

# fetch PORT PATH OUT: curl on the host, bounded.
fetch() {
  on_host timeout -k 5 60 curl --noproxy '*' -sS -f --max-time 50 -o "$3" \
    "http://127.0.0.1:$1$2" 2>>"$WORK/curl.err"
}

# run_mpm MPM PORT
run_mpm() {
  local mpm=$1 port=$2
  local dir=$WORK/$mpm
  expect_port_free "$port"
  write_conf "$dir" "$port" "$mpm"
  on_host apache2 -t -f "$dir/httpd.conf" >"$WORK/$mpm-configtest.out" 2>&1 ||
    fail_with_logs "$mpm: apache2 -t rejects the generated config" "$WORK/$mpm-configtest.out"

  ROUTE="0.0.0.0/0:$port,127.0.0.0/8"
  # setsid: on SIGTERM the parent signals its whole process group, which would otherwise
  # include this script.
  start_ns "apache-$mpm" setsid apache2 -f "$dir/httpd.conf" -DFOREGROUND
  local pid=$BG_PID
  local logs=("$WORK/apache-$mpm.log" "$dir/error.log" "$dir/access.log" "$WORK/curl.err")
  wait_listening "$port" "$pid"
  counters "$mpm-before"

  fetch "$port" /small.txt "$WORK/$mpm.small" ||
    fail_with_logs "$mpm: curl of the small page failed" "${logs[@]}"
  expect_same_file "$mpm: small page" "$docroot/small.txt" "$WORK/$mpm.small"

  fetch "$port" /big.bin "$WORK/$mpm.big" ||
    fail_with_logs "$mpm: curl of the $big_mib MiB file failed" "${logs[@]}"
  expect_big "$mpm: $big_mib MiB file" "$WORK/$mpm.big"
  rm -f "$WORK/$mpm.big"

  local i rc bad=0
  local -a pids=()
  for ((i = 0; i < parallel; i++)); do
    fetch "$port" /big.bin "$WORK/$mpm.par$i" &
    pids+=($!)
  done
  for ((i = 0; i < parallel; i++)); do
    wait "${pids[$i]}"; rc=$?
    [[ $rc -eq 0 ]] || { log "$mpm: parallel curl $i exited $rc"; bad=1; }
  done
  [[ $bad -eq 0 ]] || fail_with_logs "$mpm: some of the $parallel parallel curls failed" "${logs[@]}"
  for ((i = 0; i < parallel; i++)); do
    expect_big "$mpm: parallel fetch $i" "$WORK/$mpm.par$i"
    rm -f "$WORK/$mpm.par$i"
  done

  kill -0 "$pid" 2>/dev/null || fail_with_logs "$mpm: apache2 died" "${logs[@]}"
  # Every request is logged (at the end of the request: wait for the last ones) with the
  # peer 127.0.0.1 (curl), the local address the connection arrived at, 200 and the size.
  local want=$((2 + parallel)) n=0
  for ((i = 0; i < 100; i++)); do
    n=$(wc -l <"$dir/access.log" 2>/dev/null || echo 0)
    [[ $n -ge $want ]] && break
    sleep 0.05
  done
  local good_small good_big
  good_small=$(grep -cxF "127.0.0.1 127.0.0.1 $port 200 $small_size /small.txt" "$dir/access.log")
  good_big=$(grep -cxF "127.0.0.1 127.0.0.1 $port 200 $big_size /big.bin" "$dir/access.log")
  [[ $good_small -eq 1 && $good_big -eq $((1 + parallel)) && $n -eq $want ]] ||
    fail_with_logs "$mpm: access log should have $want lines '127.0.0.1 127.0.0.1 $port 200 SIZE PATH'" \
      "$dir/access.log"
  log "$mpm: access log: $n requests with peer 127.0.0.1, local 127.0.0.1:$port"

  # The bodies went out through xsockd (nothing else can leave the namespace).
  counters "$mpm-after"
  expect_counter_grew "$mpm-before" "$mpm-after" bytes_to_host $(((1 + parallel) * big_size))

  # TCP_DEFER_ACCEPT must have been accepted on the routed listener (apache only warns).
  if grep -E 'AH00076|Failed to enable' "$dir/error.log"; then
    fail_with_logs "$mpm: apache could not set the accept filter (TCP_DEFER_ACCEPT)" "$dir/error.log"
  fi

  # Graceful shutdown: SIGTERM to the parent stops the children and the parent exits.
  kill -TERM "$pid"
  for ((i = 0; i < 200; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  if kill -0 "$pid" 2>/dev/null; then
    fail_with_logs "$mpm: apache2 did not exit within 10 s of SIGTERM" "${logs[@]}"
  fi
  wait "$pid"; rc=$?
  [[ $rc -eq 0 ]] || fail_with_logs "$mpm: apache2 exited with status $rc after SIGTERM" "${logs[@]}"
  grep -q 'caught SIGTERM, shutting down' "$dir/error.log" ||
    fail_with_logs "$mpm: no orderly shutdown in the error log" "$dir/error.log"
  log "$mpm: PASS"
}

compat_start_xsockd
run_mpm prefork "$prefork_port"
run_mpm event "$event_port"
log "PASS"
