#!/usr/bin/env bash
# Outside Xen, `xsockd --transport xen` exits non-zero at once with exactly one line on
# stderr saying why. Skipped (77) on a machine that is a Xen dom0.
set -uo pipefail
xsockd=$1
if [[ -e /dev/xen/gntdev ]]; then
  echo "SKIP: /dev/xen/gntdev exists (this is Xen)"
  exit 77
fi
err=$(mktemp)
trap 'rm -f "$err"' EXIT
timeout 10 "$xsockd" --transport xen >/dev/null 2>"$err"
rc=$?
cat "$err"
if [[ $rc -eq 0 || $rc -eq 124 ]]; then
  echo "FAIL: exit status $rc, want non-zero at once" >&2
  exit 1
fi
if [[ $(wc -l <"$err") -ne 1 ]]; then
  echo "FAIL: want exactly one line on stderr" >&2
  exit 1
fi
if ! grep -qE '^xsockd: --transport xen: (not running on Xen \(/dev/xen/gntdev missing\)|this xsockd was built without Xen support)' "$err"; then
  echo "FAIL: the line does not say why" >&2
  exit 1
fi
echo "ok: exit $rc"
