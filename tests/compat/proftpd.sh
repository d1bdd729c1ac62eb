#!/usr/bin/env bash
# ProFTPD (Debian's proftpd-core, unmodified) standalone in the isolated namespace: the
# parent binds 0.0.0.0:23022 through xsockd (XSOCK_ROUTE 0.0.0.0/0:23022) and forks a
# session per connection, which chroots into the <Anonymous> root and, for passive mode,
# binds and listens a data port in 23110-23119 on the local address of its control
# connection (127.0.0.1 as getsockname() of the accepted routed socket reports it; the
# route 127.0.0.0/8 sends that bind through xsockd as well). Anonymous upload and download
# of 20 MiB files with curl from the host in EPSV and PASV mode (ftp_lib.sh), hashes
# equal. Private config, pid file, scoreboard and logs; no PAM, no /etc/proftpd.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/ftp_lib.sh"
require_root_and_netns
require_programs proftpd curl
getent passwd ftp >/dev/null || fail "no user 'ftp' (Debian's proftpd-core creates it)"

port=23022
pasv_min=23110
pasv_max=23119
mib=20
expect_port_free "$port"
log "proftpd-core $(debian_version proftpd-core)"

chmod 755 "$WORK"
root=$WORK/ftproot
mkdir -p "$root/pub"
chmod 755 "$root"
chown ftp "$root/pub"

cat >"$WORK/proftpd.conf" <<EOF
ServerType standalone
ServerName "xsock compat"
DefaultServer on
DefaultAddress 0.0.0.0
Port $port
UseIPv6 off
PidFile $WORK/proftpd.pid
ScoreboardFile $WORK/proftpd.scoreboard
DelayEngine off
WtmpLog off
UseReverseDNS off
User nobody
Group nogroup
Umask 022
PassivePorts $pasv_min $pasv_max
SystemLog $WORK/proftpd-system.log
TransferLog $WORK/proftpd-xfer.log
AuthPAM off
<Anonymous $root>
  User ftp
  Group nogroup
  UserAlias anonymous ftp
  RequireValidShell off
  AnonRequirePassword off
  <Directory pub>
    <Limit WRITE>
      AllowAll
    </Limit>
  </Directory>
</Anonymous>
EOF
on_host proftpd -t -c "$WORK/proftpd.conf" >"$WORK/configtest.out" 2>&1 ||
  fail_with_logs "proftpd -t rejects the generated config" "$WORK/configtest.out"

compat_start_xsockd
ROUTE="0.0.0.0/0:$port,127.0.0.0/8"
start_ns proftpd proftpd --nodaemon -c "$WORK/proftpd.conf"
pid=$BG_PID
logs=("$WORK/proftpd.log" "$WORK/proftpd-system.log" "$WORK/proftpd-xfer.log")
wait_listening "$port" "$pid"

ftp_round_trip "$port" "$root/pub" "$mib" "${logs[@]}"

kill -0 "$pid" 2>/dev/null || fail_with_logs "proftpd died" "${logs[@]}"
# The transfer log records the four transfers, complete.
n=$(grep -cE " $((mib * 1024 * 1024)) .* c\$" "$WORK/proftpd-xfer.log")
[[ $n -eq 4 ]] || fail_with_logs "the transfer log should show 4 complete $mib MiB transfers, shows $n" \
  "$WORK/proftpd-xfer.log"
stop_bg "$pid"
log "PASS"
