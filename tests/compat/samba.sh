#!/usr/bin/env bash
# Samba (Debian's smbd, unmodified) in the isolated namespace: a standalone server with a
# private smb.conf (every lock/state/cache/private/pid directory in the work directory),
# one guest-writable share, `smb ports = 23445`. smbd binds both 0.0.0.0:23445 and
# [::]:23445 (IPV6_V6ONLY), both through xsockd (XSOCK_ROUTE 0.0.0.0/0:23445 and
# [::]/0:23445), and forks a child per connection that serves it over SMB2/3. From the
# host, smbclient (its own client config) puts a 20 MiB random file over 127.0.0.1, lists
# the share and gets the file back over [::1]: the stored copy and the fetched copy must
# have the file's sha256.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
require_programs smbd smbclient

port=23445
mib=20
expect_port_free "$port"
log "samba $(debian_version samba), smbclient $(debian_version smbclient)"

s=$WORK/samba
mkdir -p "$s"/{lock,state,cache,private,pid,ncalrpc,log,share} "$WORK/client"/{lock,state,cache,private}
chmod 755 "$WORK" "$s"
# Guests are mapped to nobody, who must be able to write the share.
chown nobody "$s/share"

cat >"$s/smb.conf" <<EOF
[global]
  server role = standalone server
  workgroup = XSOCK
  netbios name = XSOCKCOMPAT
  smb ports = $port
  # In the empty namespace nothing is up: without an interfaces line smbd exits ("Could
  # not determine network interfaces"); with one that matches nothing it only warns and
  # binds the wildcard addresses.
  interfaces = 127.0.0.1/8
  bind interfaces only = no
  disable netbios = yes
  server services = smb
  lock directory = $s/lock
  state directory = $s/state
  cache directory = $s/cache
  private dir = $s/private
  binddns dir = $s/private
  pid directory = $s/pid
  ncalrpc dir = $s/ncalrpc
  log file = $s/log/smbd.log
  log level = 1
  passdb backend = tdbsam:$s/private/passdb.tdb
  map to guest = Bad User
  guest account = nobody
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  dns proxy = no
[share]
  path = $s/share
  read only = no
  guest ok = yes
EOF
cat >"$WORK/client/smb.conf" <<EOF
[global]
  lock directory = $WORK/client/lock
  state directory = $WORK/client/state
  cache directory = $WORK/client/cache
  private dir = $WORK/client/private
  client min protocol = SMB2
EOF
on_host testparm -s "$s/smb.conf" >"$WORK/testparm.out" 2>&1 ||
  fail_with_logs "testparm rejects the generated smb.conf" "$WORK/testparm.out"

make_random_file "$WORK/up.bin" "$mib"

compat_start_xsockd
ROUTE="0.0.0.0/0:$port,[::]/0:$port,127.0.0.0/8"
# setsid: smbd's parent signals its process group when it stops, which would otherwise
# include this script (--no-process-group keeps it from making its own).
start_ns smbd setsid smbd --foreground --no-process-group --debug-stdout -s "$s/smb.conf"
pid=$BG_PID
logs=("$WORK/smbd.log" "$s/log/smbd.log")
wait_listening "$port" "$pid" 30
counters before

# smb CMDS OUT [HOST]: one smbclient session as guest on the host (to 127.0.0.1 unless
# HOST says otherwise), bounded.
smb() {
  on_host timeout -k 5 60 smbclient "//${3:-127.0.0.1}/share" -p "$port" -N \
    -s "$WORK/client/smb.conf" -c "$1" >"$2" 2>&1
  local rc=$?
  [[ $rc -eq 0 ]] || fail_with_logs "smbclient //${3:-127.0.0.1}/share -c '$1' exited $rc" "$2" "${logs[@]}"
}

smb "put $WORK/up.bin up.bin" "$WORK/put.out"
expect_same_file "put: the copy smbd stored" "$WORK/up.bin" "$s/share/up.bin"

smb "ls" "$WORK/ls.out"
grep -qE "^ +up\.bin +A +$((mib * 1024 * 1024)) " "$WORK/ls.out" ||
  fail_with_logs "the share's listing does not show up.bin with its size" "$WORK/ls.out"
log "ls: $(grep -E 'up\.bin' "$WORK/ls.out" | tr -s ' ')"

smb "get up.bin $WORK/down.bin" "$WORK/get.out" ::1
expect_same_file "get over [::1]" "$WORK/up.bin" "$WORK/down.bin"

kill -0 "$pid" 2>/dev/null || fail_with_logs "smbd died" "${logs[@]}"
# Both directions went through xsockd (nothing else can leave the namespace).
counters after
expect_counter_grew before after bytes_from_host $((mib * 1024 * 1024))
expect_counter_grew before after bytes_to_host $((mib * 1024 * 1024))
stop_bg "$pid"
log "PASS"
