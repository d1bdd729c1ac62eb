#!/usr/bin/env bash
# examples/xsockd.service is a unit systemd accepts as written: `systemd-analyze verify`
# (with ExecStart pointed at the xsockd under test, as verify checks the binary) prints no
# warning at all — an unknown or misspelt directive, a bad value or a missing binary would
# each print one — and the unit keeps the directives xsockd relies on (reload by SIGHUP,
# /run/xsock and /etc/xsock, AF_NETLINK for sock_diag, CAP_NET_BIND_SERVICE).
source "$(dirname "$0")/lib.sh"
command -v systemd-analyze >/dev/null || fail "systemd-analyze missing (Debian package systemd, tools/setup-deps.sh)"
unit=$(dirname "$0")/../../examples/xsockd.service
[[ -f $unit ]] || fail "examples/xsockd.service missing"
sed "s|/usr/local/bin/xsockd|$XSOCKD|" "$unit" >"$WORK/xsockd.service"
systemd-analyze verify "$WORK/xsockd.service" >"$WORK/verify.out" 2>&1
rc=$?
cat "$WORK/verify.out"
expect_status "systemd-analyze verify" 0 "$rc" "$WORK/verify.out"
[[ ! -s $WORK/verify.out ]] || fail "systemd-analyze verify printed warnings (above)"
for want in 'ExecReload=/bin/kill -HUP $MAINPID' 'RuntimeDirectory=xsock' 'ConfigurationDirectory=xsock' \
            'CAP_NET_BIND_SERVICE'; do
  grep -qF -- "$want" "$unit" || fail "the unit lacks '$want'"
done
grep -E '^RestrictAddressFamilies=' "$unit" | grep -qw AF_NETLINK ||
  fail "RestrictAddressFamilies lacks AF_NETLINK (sock_diag)"
# xsockd accepts the command line the unit gives it.
cmd=$(sed -n 's/^ExecStart=[^ ]* //p' "$unit")
# shellcheck disable=SC2086
"$XSOCKD" $cmd --check-config --config /dev/null >"$WORK/check.out" 2>&1
grep -q "ok (0 client blocks" "$WORK/check.out" ||
  { show_file "xsockd $cmd --check-config" "$WORK/check.out"; fail "xsockd does not accept the unit's ExecStart arguments"; }
log "PASS"
