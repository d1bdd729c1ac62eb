#!/usr/bin/env bash
# Installs the Debian 12 packages xsock needs to build, test, benchmark and run its demo.
# Idempotent: packages already installed are left alone, and the package lists are
# refreshed only when something is missing. Needs root.
set -euo pipefail

packages=(
  # build
  build-essential meson ninja-build pkg-config
  libfmt-dev libabsl-dev catch2 libbenchmark-dev libtomlplusplus-dev libxen-dev
  # fuzzing (libFuzzer ships in libclang-rt-14-dev) and sanitizer runtimes
  clang libclang-rt-14-dev
  # tests, demo and benchmarks: real programs and namespace tooling
  curl python3 iproute2 util-linux procps git coreutils psmisc
  # tests/xen-real: Xen under QEMU's software emulation (Xen itself comes from .deb files
  # the test downloads into .cache/xen-real, not installed)
  qemu-system-x86 cpio
  # tests/integration/resolve_backend.sh: a DNS server on a test namespace's loopback
  dnsmasq-base
  # tests/integration/systemd_unit.sh: systemd-analyze verify of examples/xsockd.service
  systemd
  # tests/compat: the real-program matrix (ssh, telnet, redis, iperf3) and diagnosis
  openssh-server openssh-client inetutils-telnetd inetutils-telnet inetutils-inetd expect
  redis-server redis-tools iperf3 strace
  # tests/compat: servers (apache, nginx, proftpd, mariadb, samba); vsftpd: see below
  apache2 nginx proftpd-core mariadb-server mariadb-client samba smbclient libwrap0
)

# vsftpd conflicts with proftpd-core (both provide ftp-server), so tests/compat/vsftpd.sh
# runs Debian's vsftpd binary unpacked from its .deb (dpkg -x, unmodified, not installed:
# no service, no user) into this directory. Its libraries come with the packages above.
vsftpd_root=/opt/xsock-compat/vsftpd
unpack_vsftpd() {
  [[ -x $vsftpd_root/usr/sbin/vsftpd && -s $vsftpd_root/VERSION ]] && return 0
  local tmp
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root vsftpd); then
    apt-get update -qq
    (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root vsftpd)
  fi
  mkdir -p "$vsftpd_root"
  dpkg -x "$tmp"/vsftpd_*.deb "$vsftpd_root"
  dpkg-deb -f "$tmp"/vsftpd_*.deb Version >"$vsftpd_root/VERSION"
  rm -rf "$tmp"
  echo "setup-deps: unpacked vsftpd into $vsftpd_root"
}

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
  unpack_vsftpd
  exit 0
fi

echo "setup-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Server packages (openssh-server, redis-server, inetd, iperf3) start their daemons on
# install; the tests start private instances only. A policy-rc.d answering 101 forbids
# invoke-rc.d (and deb-systemd-invoke) to start anything while we install; one already
# there is put back afterwards.
policy=/usr/sbin/policy-rc.d
if [[ -e $policy ]]; then
  mv "$policy" "$policy.xsock-saved"
  trap 'mv -f "$policy.xsock-saved" "$policy"' EXIT
else
  trap 'rm -f "$policy"' EXIT
fi
printf '#!/bin/sh\nexit 101\n' >"$policy"
chmod 755 "$policy"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
unpack_vsftpd
echo "setup-deps: done"
