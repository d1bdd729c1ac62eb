#!/usr/bin/env bash
# The whole xsock test suite: installs what is missing, builds, and runs
#   1. every suite (unit, stress, integration, compat, xen-real: Xen 4.17 under QEMU) in the
#      regular build (build/),
#   2. unit + stress suites under AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/),
#   3. the libFuzzer targets for a bounded time with clang (build-fuzz/),
# then prints one closing line "N passed, N failed". Exits non-zero on any failure.
#
# Environment: XSOCK_TEST_SKIP_ASAN=1 / XSOCK_TEST_SKIP_FUZZ=1 leave out stage 2 / 3 (for a
# quick local run; CI runs everything). Needs root (network namespaces, apt-get).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash tools/setup-deps.sh || exit 1

jobs=$(nproc)
status=0
stages=()

log() { printf '\n=== %s ===\n' "$*"; }

setup() {  # setup DIR [meson args...]
  local dir=$1; shift
  if [[ -f $dir/build.ninja ]]; then
    meson setup --reconfigure "$dir" "$@" >"$dir.setup.log" 2>&1
  else
    meson setup "$dir" "$@" >"$dir.setup.log" 2>&1
  fi || { cat "$dir.setup.log"; return 1; }
}

# Builds only what the tests of the given suites need (meson test would build everything,
# benchmarks included), so the sanitizer and clang stages stay short on a 2-core machine.
build_for_suites() {  # build_for_suites DIR SUITE...
  local dir=$1; shift
  local targets
  targets=$(meson introspect "$dir" --tests --targets | python3 -c '
import json, os, sys
d = json.load(sys.stdin)
want = set(sys.argv[2:])
ids = {t["id"]: t["filename"] for t in d["targets"]}
out = set()
for t in d["tests"]:
    if any(s.split(":")[-1] in want for s in t["suite"]):
        for dep in t["depends"]:
            for f in ids.get(dep, []):
                out.add(os.path.relpath(f, sys.argv[1]))
print(" ".join(sorted(out)))
' "$dir" "$@") || return 1
  [[ -n $targets ]] || { echo "no test targets for suites $* in $dir"; return 1; }
  # shellcheck disable=SC2086
  ninja -C "$dir" -j"$jobs" $targets
}

run_stage() {  # run_stage NAME DIR SUITE...
  local name=$1 dir=$2; shift 2
  local args=()
  for s in "$@"; do args+=(--suite "$s"); done
  log "$name: meson test ${args[*]}"
  if ! meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes 1 "${args[@]}"; then
    status=1
  fi
  stages+=("$dir")
}

# No debug info in the test builds: it doubles compile time and no test needs it.
log "build (regular)"
if setup build -Ddebug=false -Doptimization=2 && ninja -C build -j"$jobs"; then
  run_stage "regular" build unit stress integration compat xen-real
else
  echo "regular build failed"; status=1
fi

if [[ ${XSOCK_TEST_SKIP_ASAN:-0} != 1 ]]; then
  log "build (ASan + UBSan)"
  if setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbench=false \
        -Ddebug=false -Doptimization=1 -Dring_stress_mib=256 &&
     build_for_suites build-asan unit stress; then
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
      run_stage "asan" build-asan unit stress
  else
    echo "ASan build failed"; status=1
  fi
fi

if [[ ${XSOCK_TEST_SKIP_FUZZ:-0} != 1 ]]; then
  log "build (clang, libFuzzer)"
  if CC=clang CXX=clang++ setup build-fuzz -Dfuzz=enabled -Dbench=false -Ddebug=false &&
     build_for_suites build-fuzz fuzz; then
    run_stage "fuzz" build-fuzz fuzz
  else
    echo "fuzz build failed"; status=1
  fi
fi

# One closing line over every stage, from meson's own records.
python3 - "${stages[@]}" <<'PY' || status=1
import json, sys
passed = failed = skipped = 0
for d in sys.argv[1:]:
    try:
        lines = open(f"{d}/meson-logs/testlog.json").read().splitlines()
    except OSError:
        failed += 1
        print(f"{d}: no test log")
        continue
    for line in lines:
        r = json.loads(line)
        res = r.get("result")
        if res in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif res == "SKIP":
            skipped += 1
            print(f"skipped: {d}: {r['name']}")
        else:
            failed += 1
            print(f"failed: {d}: {r['name']} ({res})")
if passed == 0:
    print("no test ran")
    failed += 1
line = f"{passed} passed, {failed} failed"
if skipped:
    line += f", {skipped} skipped"
print(line)
sys.exit(1 if failed or skipped else 0)
PY
exit $status
