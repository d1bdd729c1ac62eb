#!/usr/bin/env bash
# Outside Xen, both Xen roles of xsockd (`--transport xen`, dom0's backend, and `--front
# xen`, the domU's frontend) exit non-zero at once with exactly one line on stderr saying
# why. Skipped (77) on a machine that is a Xen domain.
set -uo pipefail
xsockd=$1
if [[ -e /dev/xen/gntdev || -e /dev/xen/gntalloc ]]; then
  echo "SKIP: /dev/xen exists (this is Xen)"
  exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
status=0
# check NAME PATTERN ARGS...: one line on stderr matching PATTERN, exit non-zero at once.
check() {
  local name=$1 pattern=$2
  shift 2
  timeout 10 "$xsockd" "$@" >/dev/null 2>"$dir/err"
  local rc=$?
  echo "$name: exit $rc: $(cat "$dir/err")"
  if [[ $rc -eq 0 || $rc -eq 124 ]]; then
    echo "FAIL: $name: exit status $rc, want non-zero at once" >&2
    status=1
  elif [[ $(wc -l <"$dir/err") -ne 1 ]]; then
    echo "FAIL: $name: want exactly one line on stderr" >&2
    status=1
  elif ! grep -qE "$pattern" "$dir/err"; then
    echo "FAIL: $name: the line does not say why" >&2
    status=1
  fi
  if [[ -e "$dir/xsockd.sock" ]]; then
    echo "FAIL: $name: left a socket file behind" >&2
    status=1
  fi
}
built_without='this xsockd was built without Xen support'
check "--transport xen" \
  "^xsockd: --transport xen: (not running on Xen \(/dev/xen/gntdev missing\)|$built_without)" \
  --transport xen
check "--front xen" \
  "^xsockd: --front xen: (not running on Xen \(/dev/xen missing\)|$built_without)" \
  --front xen --socket "$dir/xsockd.sock"
[[ $status -eq 0 ]] && echo ok
exit $status
