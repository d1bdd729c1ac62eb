#!/usr/bin/env bash
# vsftpd (Debian's binary, unmodified: vsftpd conflicts with proftpd-core, so
# tools/setup-deps.sh unpacks its .deb under /opt/xsock-compat/vsftpd rather than
# installing it) standalone in the isolated namespace, default security settings
# (privilege separation, chroot of the anonymous session, network isolation of the
# session process, seccomp sandbox). Control port 0.0.0.0:23021 through xsockd
# (XSOCK_ROUTE 0.0.0.0/0:23021); passive data ports 23100-23109, bound by vsftpd on the
# local address of the control connection, 127.0.0.1 as getsockname() reports it, which
# the route 127.0.0.0/8 sends through xsockd too. Anonymous upload and download of 20 MiB
# files with curl from the host in EPSV and PASV mode (ftp_lib.sh), hashes equal.
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/ftp_lib.sh"
require_root_and_netns
vsftpd=/opt/xsock-compat/vsftpd/usr/sbin/vsftpd
require_programs "$vsftpd" curl
# The anonymous account (Debian's proftpd-core creates the system user ftp).
getent passwd ftp >/dev/null || fail "no user 'ftp' (tools/setup-deps.sh installs proftpd-core, which creates it)"

port=23021
pasv_min=23100
pasv_max=23109
mib=20
expect_port_free "$port"
log "vsftpd $(cat /opt/xsock-compat/vsftpd/VERSION 2>/dev/null)"

# The anonymous root must not be writable by the session (vsftpd refuses to chroot into
# a writable root); pub/ is where uploads go. WORK is 0700: open it for the ftp user.
chmod 755 "$WORK"
root=$WORK/ftproot
mkdir -p "$root/pub" "$WORK/empty"
chmod 755 "$root" "$WORK/empty"
chown ftp "$root/pub"

cat >"$WORK/vsftpd.conf" <<EOF
listen=YES
listen_ipv6=NO
listen_address=0.0.0.0
listen_port=$port
background=NO
anonymous_enable=YES
no_anon_password=YES
local_enable=NO
write_enable=YES
anon_upload_enable=YES
anon_umask=022
anon_root=$root
ftp_username=ftp
nopriv_user=nobody
secure_chroot_dir=$WORK/empty
pasv_enable=YES
pasv_min_port=$pasv_min
pasv_max_port=$pasv_max
port_enable=NO
connect_from_port_20=NO
xferlog_enable=YES
vsftpd_log_file=$WORK/vsftpd-transfers.log
log_ftp_protocol=YES
xferlog_std_format=NO
use_localtime=NO
pam_service_name=vsftpd
EOF

compat_start_xsockd
ROUTE="0.0.0.0/0:$port,127.0.0.0/8"
start_ns vsftpd "$vsftpd" "$WORK/vsftpd.conf"
pid=$BG_PID
wait_listening "$port" "$pid"

ftp_round_trip "$port" "$root/pub" "$mib" "$WORK/vsftpd.log" "$WORK/vsftpd-transfers.log"

kill -0 "$pid" 2>/dev/null || fail_with_logs "vsftpd died" "$WORK/vsftpd.log" "$WORK/vsftpd-transfers.log"
# Every passive data connection was made in the range.
if grep -E 'FTP response: .*"227 ' "$WORK/vsftpd-transfers.log" | grep -vE '\(127,0,0,1,'; then
  fail_with_logs "a PASV reply names another address than 127.0.0.1" "$WORK/vsftpd-transfers.log"
fi
log "PASV replies: $(grep -oE '"227 [^"]*"' "$WORK/vsftpd-transfers.log" | tr '\n' ' ')"
stop_bg "$pid"
log "PASS"
