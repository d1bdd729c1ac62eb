#!/usr/bin/env bash
# OpenSSH, unmodified, both directions:
#  1. sshd on the host (plain, 127.0.0.1:22011); `ssh` and `scp` (which spawns ssh) run in
#     the namespace through xsockd: the same checks as in 2.
#  2. sshd (non-daemonised, private config, host key and authorized key made here) runs in
#     the isolated namespace and listens on 0.0.0.0:22010 through xsockd (XSOCK_ROUTE
#     0.0.0.0/0:22010 selects the routed bind). sshd re-execs itself (/usr/sbin/sshd -R)
#     for each connection with the accepted socket inherited, and calls closefrom, so the
#     library must adopt the socket after exec. From the host: `ssh` runs a command (its
#     output, and that the session's network namespace is sshd's), `scp` sends and fetches
#     a 50 MiB random file (sha256 equal both ways). sshd's pre-authentication child runs
#     under OpenSSH's seccomp sandbox, so the library's calls there must be ones the
#     sandbox allows.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
require_programs /usr/sbin/sshd ssh scp ssh-keygen /usr/lib/openssh/sftp-server

ns_port=22010
host_port=22011
size_mib=50
expect_port_free "$ns_port"
expect_port_free "$host_port"
log "openssh-server $(debian_version openssh-server), openssh-client $(debian_version openssh-client)"

# sshd insists on its privilege separation directory (Debian's service creates it).
mkdir -p /run/sshd && chmod 755 /run/sshd

ssh-keygen -q -t ed25519 -N '' -C xsock-compat-host -f "$WORK/host_key" || fail "ssh-keygen (host key)"
ssh-keygen -q -t ed25519 -N '' -C xsock-compat-client -f "$WORK/id" || fail "ssh-keygen (client key)"
cp "$WORK/id.pub" "$WORK/authorized_keys"

# write_sshd_config FILE ADDRESS PORT
write_sshd_config() {
  cat >"$1" <<EOF
ListenAddress $2:$3
HostKey $WORK/host_key
PidFile none
AuthorizedKeysFile $WORK/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The work directory is in /tmp (mode 1777), which StrictModes would refuse.
StrictModes no
UseDNS no
PrintMotd no
Subsystem sftp /usr/lib/openssh/sftp-server
LogLevel VERBOSE
EOF
}

# SSH_LOGLEVEL=DEBUG in the environment makes the clients verbose (diagnosis).
client_opts=(-F /dev/null -i "$WORK/id" -o IdentitiesOnly=yes -o BatchMode=yes
             -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
             -o ConnectTimeout=15 -o "LogLevel=${SSH_LOGLEVEL:-ERROR}")

make_random_file "$WORK/up.bin" "$size_mib"
make_random_file "$WORK/down.bin" "$size_mib"

# check_session WHERE SSH_OUTPUT_FILE SSHD_PID: the remote command printed the expected
# text, and ran in sshd's network namespace.
check_session() {
  local where=$1 out=$2 sshd_pid=$3
  local want_ns
  want_ns=$(readlink "/proc/$sshd_pid/ns/net")
  grep -qxF "xsock compat 42" "$out" || fail_with_logs "$where: ssh command output wrong" "$out"
  grep -qxF "netns $want_ns" "$out" ||
    fail_with_logs "$where: the session did not run in sshd's namespace ($want_ns)" "$out"
  log "$where: ssh ran the command: $(tr '\n' ' ' <"$out")"
}
# shellcheck disable=SC2016  # expanded by the remote shell, not here
remote_cmd='echo "xsock compat $((6 * 7))"; echo "netns $(readlink /proc/self/ns/net)"'

compat_start_xsockd
# diagnose_ns_sshd: after a failed login to the namespace's sshd, runs it once more under
# strace and says which of its processes died of a signal (SIGSYS: a system call the
# pre-authentication seccomp sandbox forbids), with that process's last system calls.
diagnose_ns_sshd() {
  [[ $COMPAT_PLAIN == 1 ]] && return 0
  stop_bg "$sshd_ns"
  local trace=$WORK/strace.diagnosis
  ns_command diagnosis strace -f -tt -s 64 -o "$trace" /usr/sbin/sshd -D -e -f "$WORK/sshd_ns.conf"
  "${NS_CMD[@]}" >"$WORK/sshd-diag.log" 2>&1 &
  BACKGROUND_PIDS+=($!)
  local pid=$! i
  for ((i = 0; i < 200; i++)); do listening "$ns_port" && break; sleep 0.05; done
  on_host timeout -k 5 20 ssh "${client_opts[@]}" -p "$ns_port" root@127.0.0.1 true >/dev/null 2>&1
  sleep 0.5
  stop_bg "$pid"
  echo "---- diagnosis: sshd's processes that died of a signal (strace -f) ----"
  local victims v
  victims=$(awk '/\+\+\+ killed by/ { print $1 }' "$trace" | sort -u)
  if [[ -z $victims ]]; then
    echo "(none; the sshd log and ssh's output above are all there is)"
  fi
  for v in $victims; do
    grep "^$v " "$trace" | grep '+++ killed by'
    echo "last system calls of $v:"
    grep "^$v " "$trace" | grep -v '+++' | tail -n 4 | cut -c1-200
  done
  echo "---- end of diagnosis ----"
}

# ---- 1. sshd on the host, clients in the namespace -------------------------------------
write_sshd_config "$WORK/sshd_host.conf" 127.0.0.1 "$host_port"
start_host sshd-host /usr/sbin/sshd -D -e -f "$WORK/sshd_host.conf"
sshd_host=$BG_PID
wait_listening "$host_port" "$sshd_host"
ROUTE='127.0.0.0/8'

in_ns timeout -k 5 30 ssh "${client_opts[@]}" -p "$host_port" root@127.0.0.1 "$remote_cmd" \
  >"$WORK/ssh2.out" 2>&1
rc=$?
[[ $rc -eq 0 ]] || fail_with_logs "ssh from the namespace exited $rc" "$WORK/ssh2.out" "$WORK/sshd-host.log"
check_session "namespace -> host" "$WORK/ssh2.out" "$sshd_host"

in_ns timeout -k 5 60 scp "${client_opts[@]}" -P "$host_port" "$WORK/up.bin" \
  "root@127.0.0.1:$WORK/up.host-received" >"$WORK/scp3.out" 2>&1
rc=$?
[[ $rc -eq 0 ]] || fail_with_logs "scp from the namespace to the host exited $rc" "$WORK/scp3.out" "$WORK/sshd-host.log"
expect_same_file "scp namespace -> host sshd" "$WORK/up.bin" "$WORK/up.host-received"

in_ns timeout -k 5 60 scp "${client_opts[@]}" -P "$host_port" \
  "root@127.0.0.1:$WORK/down.bin" "$WORK/down.from-host" >"$WORK/scp4.out" 2>&1
rc=$?
[[ $rc -eq 0 ]] || fail_with_logs "scp from the host sshd into the namespace exited $rc" "$WORK/scp4.out" "$WORK/sshd-host.log"
expect_same_file "scp host sshd -> namespace" "$WORK/down.bin" "$WORK/down.from-host"

stop_bg "$sshd_host"
rm -f "$WORK/up.host-received" "$WORK/down.from-host"

# ---- 2. sshd in the namespace, clients on the host -------------------------------------
write_sshd_config "$WORK/sshd_ns.conf" 0.0.0.0 "$ns_port"
ROUTE="0.0.0.0/0:$ns_port"
start_ns sshd-ns /usr/sbin/sshd -D -e -f "$WORK/sshd_ns.conf"
sshd_ns=$BG_PID
wait_listening "$ns_port" "$sshd_ns"

on_host timeout -k 5 30 ssh "${client_opts[@]}" -p "$ns_port" root@127.0.0.1 "$remote_cmd" \
  >"$WORK/ssh1.out" 2>&1
rc=$?
if [[ $rc -ne 0 ]]; then
  show_file ssh1.out "$WORK/ssh1.out"
  show_file sshd-ns.log "$WORK/sshd-ns.log"
  diagnose_ns_sshd
  fail "ssh to sshd in the namespace exited $rc"
fi
check_session "host -> namespace" "$WORK/ssh1.out" "$sshd_ns"

on_host timeout -k 5 60 scp "${client_opts[@]}" -P "$ns_port" "$WORK/up.bin" \
  "root@127.0.0.1:$WORK/up.ns-received" >"$WORK/scp1.out" 2>&1
rc=$?
[[ $rc -eq 0 ]] || fail_with_logs "scp to sshd in the namespace exited $rc" "$WORK/scp1.out" "$WORK/sshd-ns.log"
expect_same_file "scp host -> namespace sshd" "$WORK/up.bin" "$WORK/up.ns-received"

on_host timeout -k 5 60 scp "${client_opts[@]}" -P "$ns_port" \
  "root@127.0.0.1:$WORK/down.bin" "$WORK/down.from-ns" >"$WORK/scp2.out" 2>&1
rc=$?
[[ $rc -eq 0 ]] || fail_with_logs "scp from sshd in the namespace exited $rc" "$WORK/scp2.out" "$WORK/sshd-ns.log"
expect_same_file "scp namespace sshd -> host" "$WORK/down.bin" "$WORK/down.from-ns"

kill -0 "$sshd_ns" 2>/dev/null || fail_with_logs "sshd in the namespace died" "$WORK/sshd-ns.log"
stop_bg "$sshd_ns"
log "PASS"
