#!/usr/bin/env bash
# Installs the Debian 12 packages xsock needs to build, test, benchmark and run its demo.
# Idempotent: packages already installed are left alone, and the package lists are
# refreshed only when something is missing. Needs root.
set -euo pipefail

packages=(
  # build
  build-essential meson ninja-build pkg-config
  libfmt-dev libabsl-dev catch2 libbenchmark-dev
  # fuzzing (libFuzzer ships in libclang-rt-14-dev) and sanitizer runtimes
  clang libclang-rt-14-dev
  # tests, demo and benchmarks: real programs and namespace tooling
  curl python3 iproute2 util-linux procps git coreutils psmisc
)

if [[ $(id -u) -ne 0 ]]; then
  echo "setup-deps: needs root to apt-get install: ${packages[*]}" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "setup-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-deps: done"
