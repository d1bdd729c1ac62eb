#!/usr/bin/env bash
# nginx (Debian's, unmodified) in the isolated namespace, master + 2 worker processes,
# `sendfile on`, listening on 0.0.0.0:PORT through xsockd (XSOCK_ROUTE 0.0.0.0/0:PORT
# selects the routed bind). The master binds and listens; both workers inherit the
# listener and accept from it in their epoll loops (nonblocking accept, EAGAIN when the
# other worker won). From the host, curl fetches a small page and a 50 MiB file, then 8
# clients fetch the big file at once; every body is compared (sha256), the access log
# must show each request with its real peer and local address, and both workers must
# have served some of the requests when the load allows it (logged, not asserted: which
# worker wins an accept is the kernel's choice). Private prefix, config, pid and logs.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
require_programs nginx curl

port=23090
big_mib=50
parallel=8
expect_port_free "$port"
log "nginx $(debian_version nginx)"

# The workers run as nobody: they must reach the document root (mktemp made WORK 0700).
chmod 755 "$WORK"
docroot=$WORK/htdocs
prefix=$WORK/nginx
mkdir -p "$docroot" "$prefix/tmp"
printf 'xsock compat: nginx small page\n' >"$docroot/small.txt"
make_random_file "$docroot/big.bin" "$big_mib"
chmod 644 "$docroot"/*
big_sha=$(sha256_of "$docroot/big.bin")
big_size=$(stat -c %s "$docroot/big.bin")
small_size=$(stat -c %s "$docroot/small.txt")

cat >"$prefix/nginx.conf" <<EOF
worker_processes 2;
daemon off;
master_process on;
pid $prefix/nginx.pid;
error_log $prefix/error.log info;
events {
  worker_connections 64;
}
http {
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  keepalive_timeout 10;
  client_body_temp_path $prefix/tmp/body;
  proxy_temp_path $prefix/tmp/proxy;
  fastcgi_temp_path $prefix/tmp/fastcgi;
  uwsgi_temp_path $prefix/tmp/uwsgi;
  scgi_temp_path $prefix/tmp/scgi;
  # worker pid, peer, local address and port, status, body bytes, path
  log_format compat '\$pid \$remote_addr \$server_addr \$server_port \$status \$body_bytes_sent \$uri';
  access_log $prefix/access.log compat;
  server {
    listen 0.0.0.0:$port;
    root $docroot;
  }
}
EOF
on_host nginx -t -q -e "$prefix/error.log" -p "$prefix" -c "$prefix/nginx.conf" \
  >"$WORK/configtest.out" 2>&1 ||
  fail_with_logs "nginx -t rejects the generated config" "$WORK/configtest.out"

# expect_big WHAT FILE: FILE is a copy of big.bin (size and sha256; hashed once up front).
expect_big() {
  local size sha
  size=$(stat -c %s "$2" 2>/dev/null || echo missing)
  [[ $size == "$big_size" ]] || fail "$1: $size bytes, expected $big_size"
  sha=$(sha256_of "$2")
  [[ $sha == "$big_sha" ]] || fail "$1: sha256 $sha, expected $big_sha"
  log "$1: $size bytes, sha256 equal"
}

# fetch PATH OUT: curl on the host, bounded.
fetch() {
  on_host timeout -k 5 60 curl --noproxy '*' -sS -f --max-time 50 -o "$2" \
    "http://127.0.0.1:$port$1" 2>>"$WORK/curl.err"
}

compat_start_xsockd
ROUTE="0.0.0.0/0:$port,127.0.0.0/8"
start_ns nginx nginx -e "$prefix/error.log" -p "$prefix" -c "$prefix/nginx.conf"
pid=$BG_PID
logs=("$WORK/nginx.log" "$prefix/error.log" "$prefix/access.log" "$WORK/curl.err")
wait_listening "$port" "$pid"
counters before

fetch /small.txt "$WORK/small" || fail_with_logs "curl of the small page failed" "${logs[@]}"
expect_same_file "small page" "$docroot/small.txt" "$WORK/small"

fetch /big.bin "$WORK/big" || fail_with_logs "curl of the $big_mib MiB file failed" "${logs[@]}"
expect_big "$big_mib MiB file" "$WORK/big"
rm -f "$WORK/big"

pids=()
for ((i = 0; i < parallel; i++)); do
  fetch /big.bin "$WORK/par$i" &
  pids+=($!)
done
bad=0
for ((i = 0; i < parallel; i++)); do
  wait "${pids[$i]}"; rc=$?
  [[ $rc -eq 0 ]] || { log "parallel curl $i exited $rc"; bad=1; }
done
[[ $bad -eq 0 ]] || fail_with_logs "some of the $parallel parallel curls failed" "${logs[@]}"
for ((i = 0; i < parallel; i++)); do
  expect_big "parallel fetch $i" "$WORK/par$i"
  rm -f "$WORK/par$i"
done

kill -0 "$pid" 2>/dev/null || fail_with_logs "nginx died" "${logs[@]}"
# Each request logged with peer 127.0.0.1, local 127.0.0.1:PORT, 200 and the full size.
want=$((2 + parallel))
for ((i = 0; i < 100; i++)); do
  n=$(wc -l <"$prefix/access.log" 2>/dev/null || echo 0)
  [[ $n -ge $want ]] && break
  sleep 0.05
done
good_small=$(grep -cE "^[0-9]+ 127\.0\.0\.1 127\.0\.0\.1 $port 200 $small_size /small\.txt\$" "$prefix/access.log")
good_big=$(grep -cE "^[0-9]+ 127\.0\.0\.1 127\.0\.0\.1 $port 200 $big_size /big\.bin\$" "$prefix/access.log")
[[ $good_small -eq 1 && $good_big -eq $((1 + parallel)) && $n -eq $want ]] ||
  fail_with_logs "the access log should have $want lines 'PID 127.0.0.1 127.0.0.1 $port 200 SIZE PATH'" \
    "$prefix/access.log"
log "access log: $n requests, served by worker pids: $(cut -d' ' -f1 "$prefix/access.log" | sort | uniq -c | tr -s ' \n' ' ')"
if grep -E '\[(alert|crit|emerg)\]' "$prefix/error.log"; then
  fail_with_logs "nginx logged alerts" "$prefix/error.log"
fi

# The bodies went out through xsockd (nothing else can leave the namespace).
counters after
expect_counter_grew before after bytes_to_host $(((1 + parallel) * big_size))

# Graceful shutdown (SIGQUIT): the workers finish, the master exits 0.
kill -QUIT "$pid"
for ((i = 0; i < 200; i++)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
kill -0 "$pid" 2>/dev/null && fail_with_logs "nginx did not exit within 10 s of SIGQUIT" "${logs[@]}"
wait "$pid"; rc=$?
[[ $rc -eq 0 ]] || fail_with_logs "nginx exited with status $rc after SIGQUIT" "${logs[@]}"
log "PASS"
