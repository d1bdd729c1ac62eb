#!/usr/bin/env bash
# The xsock command against the example and the bad configurations:
#   * `xsock check` accepts examples/xsock.conf and rejects each examples/bad/*.conf with
#     exactly the errors listed in its "# expect:" lines (exit 1);
#   * `xsock explain` gives the documented decision for each example profile;
#   * `xsock run` refuses a bad configuration without starting the program, warns for a
#     static binary and a script, sets the environment, finds libxsock.so.
# Needs no root and no xsockd: nothing here opens a routed socket.
LIB_REQUIRED="XSOCK_CLI XSOCK_LIB"
source "$(dirname "$0")/../integration/lib.sh"
EXAMPLES=$(cd "$(dirname "$0")/../../examples" && pwd -P)

# expect_output LABEL STATUS EXPECTED CMD...: CMD (stdout and stderr together) must exit
# STATUS and print exactly EXPECTED.
expect_output() {
  local label=$1 status=$2 expected=$3
  shift 3
  "$@" >"$WORK/out" 2>&1
  local rc=$?
  printf '%s\n' "$expected" >"$WORK/expected"
  if ! diff -u "$WORK/expected" "$WORK/out" >"$WORK/diff"; then
    show_file "diff (expected, got) of $label" "$WORK/diff"
    fail "$label: output differs"
  fi
  expect_status "$label" "$status" "$rc" "$WORK/out"
  log "ok: $label"
}

cd "$EXAMPLES" || fail "no examples directory"

# ---- check ----
expect_output "check of the example" 0 "ok: 3 profiles, 7 rules" \
  "$XSOCK_CLI" check --config xsock.conf
expect_output "check via XSOCK_CONFIG" 0 "ok: 3 profiles, 7 rules" \
  env XSOCK_CONFIG=xsock.conf "$XSOCK_CLI" check
n=0
for f in bad/*.conf; do
  expected=$(sed -n 's/^# expect: //p' "$f")
  [[ -n $expected ]] || fail "$f has no '# expect:' line"
  expect_output "check of $f" 1 "$expected" "$XSOCK_CLI" check --config "$f"
  n=$((n + 1))
done
((n >= 8)) || fail "only $n bad configurations"
printf '[[profile]]\nname = "p"\noutgoing_default = "bypass"\n[[profile.outgoing]]\naction = "route"\nto = "10.0.0.0/8"\n[[profile.outgoing]]\naction = "bypass"\nto = "10.1.0.0/16"\n' >"$WORK/shadow.conf"
expect_output "check warns about a rule never used, and passes" 0 \
  "$WORK/shadow.conf:7:1: warning: outgoing rule 2 of profile 'p' is never used: rule 1 (line 4, route to 10.0.0.0/8) matches everything it does
ok: 1 profile, 2 rules, 1 warning" "$XSOCK_CLI" check --config "$WORK/shadow.conf"
expect_output "check of a missing file" 1 \
  "$WORK/none.conf: cannot read: ENOENT (No such file or directory)" \
  "$XSOCK_CLI" check --config "$WORK/none.conf"
expect_output "check with a stray argument" 2 "xsock check: unexpected argument 'x.conf'
Try 'xsock check --help'." "$XSOCK_CLI" check x.conf

# ---- explain: (a) the guest, everything but loopback through xsockd ----
expect_output "explain guest, a public address" 0 "config: xsock.conf
profile: guest (xsock.conf:29; selected by --profile)
destination: 1.1.1.1:443
rule: outgoing_default of profile 'guest' (xsock.conf:31): route
action: route
if xsockd is unreachable: fail (connect gives ECONNREFUSED)" \
  "$XSOCK_CLI" explain --config xsock.conf --profile guest 1.1.1.1:443
expect_output "explain guest, IPv6 loopback" 0 "config: xsock.conf
profile: guest (xsock.conf:29; selected by --profile)
destination: [::1]:22
rule: outgoing rule 1 of profile 'guest' (xsock.conf:34): bypass to 127.0.0.0/8, ::1/128
action: bypass" \
  "$XSOCK_CLI" explain --config xsock.conf --profile guest '[::1]:22'
expect_output "explain guest, IPv4-mapped loopback" 0 "config: xsock.conf
profile: guest (xsock.conf:29; selected by --profile)
destination: 127.0.0.1:8080 (IPv4-mapped: decided as IPv4)
rule: outgoing rule 1 of profile 'guest' (xsock.conf:34): bypass to 127.0.0.0/8, ::1/128
action: bypass" \
  "$XSOCK_CLI" explain --config xsock.conf --profile guest '[::ffff:127.0.0.1]:8080'
expect_output "explain guest, link-local, via XSOCK_PROFILE" 0 "config: xsock.conf
profile: guest (xsock.conf:29; selected by XSOCK_PROFILE)
destination: 169.254.169.254:80
rule: outgoing rule 2 of profile 'guest' (xsock.conf:38): bypass to 169.254.0.0/16, fe80::/10
action: bypass" \
  env XSOCK_PROFILE=guest "$XSOCK_CLI" explain --config xsock.conf 169.254.169.254:80
expect_output "explain, an unmatched program gets default_profile" 0 "config: xsock.conf
profile: guest (xsock.conf:29; no profile matches /usr/bin/curl run by user root; default_profile)
destination: host name example.com port 443
rule: outgoing_default of profile 'guest' (xsock.conf:31): route
action: route
if xsockd is unreachable: fail (connect gives ECONNREFUSED)" \
  "$XSOCK_CLI" explain --config xsock.conf --app /usr/bin/curl --user 0 example.com:443

# ---- (b) the billing service: only its database traffic is routed ----
expect_output "explain billing, the database" 0 "config: xsock.conf
profile: billing (xsock.conf:46; the first profile whose apps and users match /opt/billing/bin/billingd run by user billing; apps entry \"billingd\"; users entry \"billing\")
destination: 10.20.3.4:5432
rule: outgoing rule 1 of profile 'billing' (xsock.conf:53): route to 10.20.0.0/16, fd20::/48 port 5432
action: route
if xsockd is unreachable: fallback (the kernel's own socket call)" \
  "$XSOCK_CLI" explain --config xsock.conf --app /opt/billing/bin/billingd --user billing 10.20.3.4:5432
expect_output "explain billing, its HTTP stays local" 0 "config: xsock.conf
profile: billing (xsock.conf:46; the first profile whose apps and users match /opt/billing/bin/billingd run by user billing; apps entry \"billingd\"; users entry \"billing\")
destination: 10.20.3.4:443
rule: outgoing_default of profile 'billing' (xsock.conf:50): bypass
action: bypass" \
  "$XSOCK_CLI" explain --config xsock.conf --app /opt/billing/bin/billingd --user billing 10.20.3.4:443
expect_output "explain billing, a replica by name" 0 "config: xsock.conf
profile: billing (xsock.conf:46; selected by --profile)
destination: host name db-2.internal port 5433
rule: outgoing rule 2 of profile 'billing' (xsock.conf:59): route host db-*.internal port 5432-5433
action: route
if xsockd is unreachable: fallback (the kernel's own socket call)
note: profile 'billing' resolves names locally (resolve = \"local\"): host rules apply only to names resolved through xsockd; the addresses the local resolver returns are decided by the address rules" \
  "$XSOCK_CLI" explain --config xsock.conf --profile billing db-2.internal:5433
expect_output "explain, python3 of another user is not billing's" 0 "config: xsock.conf
profile: web (xsock.conf:67; the first profile whose apps and users match /usr/bin/python3 run by uid 4242; apps entry \"python3\")
destination: 10.20.3.4:5432
rule: outgoing_default of profile 'web' (xsock.conf:70): bypass
action: bypass" \
  "$XSOCK_CLI" explain --config xsock.conf --app /usr/bin/python3 --user 4242 10.20.3.4:5432

# ---- (c) the server publishing port 80 on the host's 8080 ----
expect_output "explain web, bind of port 80" 0 "config: xsock.conf
profile: web (xsock.conf:67; the first profile whose apps and users match /usr/sbin/nginx run by user root; apps entry \"nginx\")
bind: 0.0.0.0:80
rule: incoming rule 1 of profile 'web' (xsock.conf:73): route any address port 80 -> host port 8080
action: route
host side: 0.0.0.0:8080 (mapped)" \
  "$XSOCK_CLI" explain --config xsock.conf --app /usr/sbin/nginx --user 0 --bind 0.0.0.0:80
expect_output "explain web, bind of an admin port" 0 "config: xsock.conf
profile: web (xsock.conf:67; selected by --profile)
bind: 0.0.0.0:9005
rule: incoming rule 2 of profile 'web' (xsock.conf:78): route address 0.0.0.0/0 port 9000-9009 -> host 127.0.0.1
action: route
host side: 127.0.0.1:9005 (mapped)" \
  "$XSOCK_CLI" explain --config xsock.conf --profile web --bind 0.0.0.0:9005
expect_output "explain web, another bind stays in the namespace" 0 "config: xsock.conf
profile: web (xsock.conf:67; selected by --profile)
bind: [::]:22
rule: incoming_default of profile 'web' (xsock.conf:71): bypass
action: bypass" \
  "$XSOCK_CLI" explain --config xsock.conf --profile web --bind '[::]:22'
expect_output "explain web, its upstream" 0 "config: xsock.conf
profile: web (xsock.conf:67; selected by --profile)
destination: 127.0.0.1:3000
rule: outgoing rule 1 of profile 'web' (xsock.conf:84): route to 127.0.0.1/32 port 3000
action: route
if xsockd is unreachable: fail (connect gives ECONNREFUSED)" \
  "$XSOCK_CLI" explain --config xsock.conf --profile web 127.0.0.1:3000

# ---- explain: errors ----
expect_output "explain with an unknown profile" 1 \
  "xsock explain: no profile 'nope' in xsock.conf (profiles: guest, billing, web)" \
  "$XSOCK_CLI" explain --config xsock.conf --profile nope 1.2.3.4:5
expect_output "explain with a bad config" 1 \
  "bad/no-default.conf:3:1: profile 'db': missing 'outgoing_default' (\"route\" or \"bypass\": what happens to destinations no outgoing rule matches)" \
  "$XSOCK_CLI" explain --config bad/no-default.conf --profile db 1.2.3.4:5
expect_output "explain of a malformed destination" 2 \
  "xsock explain: DEST must be ADDRESS:PORT ([IPv6]:PORT) or HOST[:PORT], got 'a b:1'
Try 'xsock explain --help'." "$XSOCK_CLI" explain --config xsock.conf 'a b:1'
expect_output "explain --bind of a name" 2 \
  "xsock explain: --bind needs an address with a port, like 0.0.0.0:80 or [::]:80, got 'db:1'
Try 'xsock explain --help'." "$XSOCK_CLI" explain --config xsock.conf --bind db:1
expect_output "explain of an address without port" 2 \
  "xsock explain: DEST needs a port: '10.0.0.1:PORT'
Try 'xsock explain --help'." "$XSOCK_CLI" explain --config xsock.conf 10.0.0.1

# ---- run ----
expect_output "run with a bad config does not start the program" 2 \
  "bad/port-range.conf:18:10: outgoing rule 3 of profile 'web': 'port' must be 1-65535 or 'A-B', got \"70000\"
xsock run: not starting touch: the configuration has errors" \
  "$XSOCK_CLI" run --config bad/port-range.conf -- touch "$WORK/ran"
[[ ! -e $WORK/ran ]] || fail "run started the program despite the bad config"
expect_output "run with an unknown profile" 2 \
  "xsock run: no profile 'nope' in xsock.conf (profiles: guest, billing, web)" \
  "$XSOCK_CLI" run --config xsock.conf --profile nope -- touch "$WORK/ran"
expect_output "run with a named config that does not exist" 2 \
  "$WORK/none.conf: cannot read: ENOENT (No such file or directory)
xsock run: not starting touch: the configuration has errors" \
  env XSOCK_CONFIG="$WORK/none.conf" "$XSOCK_CLI" run touch "$WORK/ran"
[[ ! -e $WORK/ran ]] || fail "run started the program despite the errors"
expect_output "run of a program not on PATH" 127 "xsock run: no-such-program-xsock: not found in PATH" \
  "$XSOCK_CLI" run --config xsock.conf no-such-program-xsock

lib=$(realpath "$XSOCK_LIB")
# A library already in LD_PRELOAD stays, after ours: libc itself, harmless to preload.
other=$(ldd /bin/sh | awk '/libc\.so/ {print $3}')
[[ -f $other ]] || fail "no libc path from ldd /bin/sh"
# The environment the program gets, with the library given by XSOCK_LIBRARY and found
# next to xsock (build tree: build/tools/xsock, build/libintercept/libxsock.so).
expect_output "run sets LD_PRELOAD, XSOCK_CONFIG, XSOCK_PROFILE, XSOCK_SOCKET" 0 \
  "$lib $other|$EXAMPLES/xsock.conf|web|/tmp/x.sock|a b" \
  env XSOCK_LIBRARY="$XSOCK_LIB" LD_PRELOAD="$other" "$XSOCK_CLI" run --config xsock.conf \
  --profile web --socket /tmp/x.sock -- /bin/sh -c \
  'echo "$LD_PRELOAD|$XSOCK_CONFIG|$XSOCK_PROFILE|$XSOCK_SOCKET|$1"' sh 'a b'
built=$(dirname "$(realpath "$XSOCK_CLI")")/../libintercept/libxsock.so
if [[ -f $built ]]; then
  expect_output "run finds libxsock.so in the build tree" 0 "$(realpath "$built")" \
    env -u XSOCK_LIBRARY -u LD_PRELOAD "$XSOCK_CLI" run --config xsock.conf -- /bin/sh -c \
    'echo "$LD_PRELOAD"'
fi
expect_output "run with XSOCK_LIBRARY naming no file" 2 \
  "xsock run: XSOCK_LIBRARY names no file: $WORK/none.so" \
  env XSOCK_LIBRARY="$WORK/none.so" "$XSOCK_CLI" run --config xsock.conf true

printf '#!/bin/sh\necho script ran\n' >"$WORK/script"
chmod 755 "$WORK/script"
expect_output "run warns that a script's interpreter gets the library" 0 \
  "xsock run: warning: $WORK/script is a script: the library is loaded into its interpreter /bin/sh (and whatever that runs)
script ran" \
  env XSOCK_LIBRARY="$XSOCK_LIB" "$XSOCK_CLI" run --config xsock.conf "$WORK/script"
if [[ -n ${STATIC_PROBE:-} ]]; then
  expect_output "run warns for a statically linked program, and runs it" 0 \
    "xsock run: warning: $STATIC_PROBE is statically linked (no program interpreter): LD_PRELOAD does not apply, so none of its sockets is routed" \
    env XSOCK_LIBRARY="$XSOCK_LIB" "$XSOCK_CLI" run --config xsock.conf "$STATIC_PROBE"
else
  log "no static test program (the toolchain cannot link -static): static warning not checked"
fi

# ---- help and usage ----
for sub in run check explain; do
  "$XSOCK_CLI" "$sub" --help >"$WORK/help" 2>&1 || fail "xsock $sub --help failed"
  for section in NAME SYNOPSIS DESCRIPTION OPTIONS ENVIRONMENT "EXIT STATUS" EXAMPLES; do
    grep -q "^$section\$" "$WORK/help" || fail "xsock $sub --help has no $section section"
  done
  "$XSOCK_CLI" help "$sub" | cmp -s - "$WORK/help" || fail "xsock help $sub differs from --help"
done
"$XSOCK_CLI" --help | grep -q '^SYNOPSIS$' || fail "xsock --help has no synopsis"
# docs/xsock.1 and the --help texts name the same options.
man=$EXAMPLES/../docs/xsock.1
help_opts=$(for sub in run check explain; do "$XSOCK_CLI" "$sub" --help; done |
  grep -o -- '--[a-z][a-z-]*' | sort -u)
man_opts=$(grep -o -- '\\-\\-[a-z][a-z\\-]*' "$man" | sed 's/\\//g' | sort -u)
[[ $help_opts == "$man_opts" ]] ||
  fail "options in --help and docs/xsock.1 differ: $(diff <(echo "$help_opts") <(echo "$man_opts") | grep '^[<>]' | tr '\n' ' ')"
log "ok: docs/xsock.1 and --help name the same options: $(echo $help_opts)"
expect_output "unknown subcommand" 2 "xsock: unknown subcommand 'frobnicate'
Try 'xsock --help'." "$XSOCK_CLI" frobnicate
expect_output "unknown option" 2 "xsock run: unknown option '--profle'
Try 'xsock run --help'." "$XSOCK_CLI" run --profle web true
log "PASS"
