#!/usr/bin/env bash
# telnet, unmodified: inetutils-inetd (foreground, private config) runs in the isolated
# namespace and listens on 127.0.0.1:22020 through xsockd; per connection it forks and
# execs inetutils telnetd with the accepted socket as its stdin/stdout/stderr, and telnetd
# runs /bin/login on a pty. From the host, the inetutils telnet client, driven by expect,
# gets the login prompt, logs in as a user made for this test (removed at exit), runs a
# command and checks its output: the computed text, and that the shell runs in inetd's
# network namespace. Then it logs out and the connection closes cleanly.
source "$(dirname "$0")/lib.sh"
require_root_and_netns
require_programs /usr/sbin/inetutils-inetd /usr/sbin/telnetd inetutils-telnet expect \
  useradd userdel chpasswd /bin/login

port=22020
expect_port_free "$port"
log "inetutils-inetd $(debian_version inetutils-inetd), inetutils-telnetd" \
  "$(debian_version inetutils-telnetd), inetutils-telnet $(debian_version inetutils-telnet)," \
  "expect $(debian_version expect)"

# A throw-away login user with a random password; removed on every exit path.
user=xsockcompat$((RANDOM % 1000))
password=Xs$RANDOM$RANDOM
if id "$user" >/dev/null 2>&1; then
  fail "user $user already exists (left by an earlier run?): userdel -r $user"
fi
useradd --no-create-home --home-dir / --shell /bin/sh "$user" || fail "useradd $user"
on_cleanup userdel "$user"
echo "$user:$password" | chpasswd || fail "chpasswd for $user"

cat >"$WORK/inetd.conf" <<EOF
127.0.0.1:$port stream tcp nowait root /usr/sbin/telnetd telnetd -h
EOF

compat_start_xsockd
ROUTE="127.0.0.0/8:$port"
start_ns inetd /usr/sbin/inetutils-inetd -d --pidfile="$WORK/inetd.pid" "$WORK/inetd.conf"
inetd=$BG_PID
wait_listening "$port" "$inetd"
inetd_ns=$(readlink "/proc/$inetd/ns/net")

# The expect script: each step has its own exit status, so a failure says where it stuck.
cat >"$WORK/session.exp" <<'EOF'
set timeout 20
lassign $argv port user password
spawn inetutils-telnet 127.0.0.1 $port
expect {
  -re "login: $" {}
  timeout { puts "\nEXPECT: no login prompt"; exit 2 }
  eof { puts "\nEXPECT: connection closed before the login prompt"; exit 2 }
}
send "$user\r"
expect {
  -re "Password: ?$" {}
  timeout { puts "\nEXPECT: no password prompt"; exit 3 }
  eof { puts "\nEXPECT: connection closed before the password prompt"; exit 3 }
}
send "$password\r"
expect {
  -re {\$ $} {}
  "Login incorrect" { puts "\nEXPECT: login refused"; exit 4 }
  timeout { puts "\nEXPECT: no shell prompt after login"; exit 4 }
  eof { puts "\nEXPECT: connection closed after the password"; exit 4 }
}
send "echo \"result xsock-\$((6 * 7))-ok\"; echo \"netns \$(readlink /proc/self/ns/net)\"\r"
expect {
  -re {netns net:\[[0-9]+\]\r\n} {}
  timeout { puts "\nEXPECT: no command output"; exit 5 }
  eof { puts "\nEXPECT: connection closed during the command"; exit 5 }
}
send "exit\r"
expect {
  eof {}
  timeout { puts "\nEXPECT: the connection did not close after exit"; exit 6 }
}
exit 0
EOF

counters before
on_host timeout -k 5 60 expect -f "$WORK/session.exp" "$port" "$user" "$password" \
  >"$WORK/session.out" 2>&1
rc=$?
counters after
tr -d '\r' <"$WORK/session.out" >"$WORK/session.txt"
[[ $rc -eq 0 ]] || fail_with_logs "the telnet session failed (expect exit $rc)" \
  "$WORK/session.txt" "$WORK/inetd.log"
log "transcript: $(tr -c '[:print:]\n' '?' <"$WORK/session.txt" | tr '\n' '|')"
# The echoed command line holds the unexpanded $((6 * 7)); only the shell's output has 42.
grep -aqxF "result xsock-42-ok" "$WORK/session.txt" ||
  fail_with_logs "the command's output is missing from the session" "$WORK/session.txt"
grep -aqxF "netns $inetd_ns" "$WORK/session.txt" ||
  fail_with_logs "the login shell is not in inetd's namespace ($inetd_ns)" "$WORK/session.txt"
grep -aq "Connection closed by foreign host" "$WORK/session.txt" ||
  fail_with_logs "telnet did not report the server closing the connection" "$WORK/session.txt"
# The login banner and the shell's output came from telnetd through xsockd.
expect_counter_grew before after bytes_to_host 200
log "session: $(grep -aE '^(result|netns) ' "$WORK/session.txt" | tr '\n' ' ')"

kill -0 "$inetd" 2>/dev/null || fail_with_logs "inetd died" "$WORK/inetd.log"
stop_bg "$inetd"
log "PASS"
