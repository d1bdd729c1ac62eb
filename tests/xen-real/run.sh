#!/bin/bash
# Real Xen under QEMU: Xen 4.17 + Debian's 6.1 kernel as PV dom0 and PV domU, booted by
# qemu-system-x86_64 -accel tcg (no VT-x needed). dom0 runs the tree's
# `xsockd --transport xen` and loopback servers; the domU's guest config has xl's
# `pvcalls = [ "backend=0" ]` and runs tests/xen-real/probe.cc (TestFront over the real
# Xen libraries, static): download, echo, listen/accept through dom0, byte-checked.
# PASS/FAIL comes from markers on the serial console; the whole run is bounded.
#
# usage: run.sh XSOCKD [BYTES]
#   XSOCKD  the built xsockd (meson: backend/xsockd, configured with -Dxen=enabled)
#   BYTES   per transfer (default 8 MiB; see docs/xen.md for the measured budget)
# Cache: $XSOCK_XEN_CACHE, default <repo>/.cache/xen-real (git-ignored): the .deb files
# and their extracted tree are reused between runs; images are rebuilt every run.
# Needs root (apt-get download), qemu-system-x86, cpio, g++, libxen-dev (setup-deps.sh).
set -euo pipefail
XSOCKD=$(readlink -f "$1")
BYTES=${2:-8388608}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
C=${XSOCK_XEN_CACHE:-$REPO/.cache/xen-real}
QEMU_TIMEOUT=${XSOCK_XEN_TIMEOUT:-600}
STEP=${XSOCK_XEN_STEP:-60}   # seconds for each step inside the guests
mkdir -p "$C"
t0=$(date +%s)
stamp() { echo "[xen-real +$(( $(date +%s) - t0 ))s] $*"; }

# ---- 1. Debian packages (downloaded once, not installed) ----
KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
KV=${KPKG#linux-image-}
X=$C/x
if [ ! -f "$C/extracted-$KV" ]; then
  stamp "apt-get download into $C/debs"
  rm -rf "$C/debs" "$X"; mkdir -p "$C/debs" "$X"
  (cd "$C/debs" && apt-get download -qq "$KPKG" xen-hypervisor-4.17-amd64 busybox-static \
     xen-utils-4.17 xen-utils-common xenstore-utils libxencall1 libxenevtchn1 \
     libxenforeignmemory1 libxengnttab1 libxenmisc4.17 libxenstore4 libxentoollog1 \
     libxendevicemodel1 libxenhypfs1 libxentoolcore1 libyajl2 liblzma5 libuuid1 libzstd1 \
     zlib1g libc6 libgcc-s1 2>&1 | grep -v 'Download is performed unsandboxed' || true)
  for d in "$C"/debs/*.deb; do dpkg -x "$d" "$X"; done
  touch "$C/extracted-$KV"
fi
KM=$X/lib/modules/$KV/kernel/drivers/xen
gunzip -c "$X/boot/xen-4.17-amd64.gz" > "$C/xen.elf"   # 32-bit multiboot ELF for -kernel

# ---- 2. the probe, static against libxen-dev's archives ----
stamp "build probe"
g++ -std=c++20 -O2 -Wall -Wextra -Werror -static -I"$REPO" -o "$C/probe" \
  "$HERE/probe.cc" "$REPO/tests/xen/test_front.cc" "$REPO/tests/xen/xen_double.cc" \
  "$REPO/backend/xen/xen_api_real.cc" "$REPO/shared/pvcalls.cc" \
  -lxengnttab -lxenevtchn -lxenstore -lxentoolcore -lxentoollog -lpthread 2>&1 \
  | { grep -v 'statically linked' || true; }

# ---- 3. domU initramfs ----
stamp "build images"
D=$C/domurd; rm -rf "$D"; mkdir -p "$D"/{bin,proc,sys,dev,lib/modules}
cp "$X/bin/busybox" "$C/probe" "$D/bin/"
cp "$KM/xen-gntalloc.ko" "$KM/xen-evtchn.ko" "$D/lib/modules/"
cat > "$D/init" <<EOI
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in xen-evtchn xen-gntalloc; do insmod /lib/modules/\$m.ko; done
echo "XSOCK-PROBE start"
/bin/probe front $BYTES $((STEP - 10)); echo "XSOCK-PROBE exit \$?"
poweroff -f
EOI
chmod +x "$D/init"
(cd "$D" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$C/domu.cpio.gz"

# ---- 4. dom0 initramfs: busybox, Xen's tools, xsockd, the probe, their libraries ----
R=$C/dom0rd; rm -rf "$R"
mkdir -p "$R"/{bin,proc,sys,dev,tmp,boot,etc/xen,lib/modules,lib64,var/lib/xen,var/lib/xenstored,var/run/xen,var/run/xenstored,var/log/xen/console,var/lock}
cp "$X/bin/busybox" "$C/probe" "$XSOCKD" "$R/bin/"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs/xenfs; do cp "$KM/$m.ko" "$R/lib/modules/"; done
# copy_elf FILE: FILE's NEEDED libraries, recursively, into the image under
# /lib/x86_64-linux-gnu, taken from the extracted packages or else from the host (xsockd's
# fmt/abseil/toml++: the host is Debian 12 like the guest).
declare -A copied=()
find_lib() {
  local n=$1 d
  for d in "$X/lib/x86_64-linux-gnu" "$X/usr/lib/x86_64-linux-gnu" /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/$n" ] && { echo "$d/$n"; return; }
  done
  echo "missing library $n" >&2; exit 1
}
copy_elf() {
  local lib p
  for lib in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [ -n "${copied[$lib]:-}" ] && continue
    copied[$lib]=1
    p=$(find_lib "$lib")
    cp -L "$p" "$R/lib/x86_64-linux-gnu/$lib"
    copy_elf "$p"
  done
}
mkdir -p "$R/lib/x86_64-linux-gnu" "$R/usr/lib/xen-4.17/bin" "$R/usr/bin"
for b in xl xenstored xenconsoled xen-init-dom0; do cp -L "$X/usr/lib/xen-4.17/bin/$b" "$R/usr/lib/xen-4.17/bin/"; done
cp -L "$X/usr/bin/xenstore" "$R/usr/bin/"
for f in "$R"/usr/lib/xen-4.17/bin/* "$R/usr/bin/xenstore" "$R/bin/xsockd"; do copy_elf "$f"; done
cp -L "$X/lib/x86_64-linux-gnu/libgcc_s.so.1" "$R/lib/x86_64-linux-gnu/"   # xl dlopens it
cp -L "$X/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" "$R/lib/x86_64-linux-gnu/"
ln -sf ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
for t in read write ls; do ln -sf xenstore "$R/usr/bin/xenstore-$t"; done
cp "$X/etc/xen/xl.conf" "$R/etc/xen/"
cp "$X/boot/vmlinuz-$KV" "$R/boot/vmlinuz"
cp "$C/domu.cpio.gz" "$R/boot/domu.cpio.gz"
cat > "$R/etc/xen/domu.cfg" <<'EOC'
name = "domu"
type = "pv"
kernel = "/boot/vmlinuz"
ramdisk = "/boot/domu.cpio.gz"
extra = "console=hvc0 loglevel=4"
memory = 256
vcpus = 1
pvcalls = [ "backend=0" ]
on_poweroff = "destroy"
on_crash = "destroy"
EOC
cat > "$R/init" <<EOI
#!/bin/busybox sh
# Every wait is bounded by STEP seconds (well under QEMU's timeout); on any failure the
# XenStore tree, xsockd's log, the domU console, xl list and dmesg are printed, then the
# machine powers off. The verdict is one line: XSOCK-XEN-REAL: PASS | FAIL (why).
/bin/busybox --install -s /bin
export PATH=/bin:/usr/bin:/usr/lib/xen-4.17/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
STEP=$STEP BYTES=$BYTES L=/var/log/xen/console/guest-domu.log
note() { echo "=== \$* (uptime \$(cut -d' ' -f1 /proc/uptime)s) ==="; }
diag() {
  note "DIAG: \$1"
  echo "--- xl list"; xl list 2>&1
  echo "--- xenstore-ls -f"; xenstore-ls -f 2>&1 | head -n 250
  echo "--- xsockd log"; tail -n 80 /tmp/xsockd.log
  echo "--- domU console (last lines)"; tail -n 60 \$L 2>&1 | sed 's/^/domU| /'
  echo "--- dmesg (last lines)"; dmesg | tail -n 30
  echo "--- processes"; ps
}
finish() { echo "XSOCK-XEN-REAL: \$1"; sync; poweroff -f; sleep 30; }
fail() { diag "\$1"; finish "FAIL (\$1)"; }
# wait_for PATTERN FILE: true once FILE contains PATTERN, false after STEP seconds.
wait_for() {
  i=0
  while ! grep -q "\$1" "\$2" 2>/dev/null; do
    [ \$i -ge \$STEP ] && return 1
    sleep 1; i=\$((i+1))
  done
}
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts; mount -t devpts devpts /dev/pts   # xenconsoled needs ptys
note "DOM0 INIT"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs; do insmod /lib/modules/\$m.ko || fail "insmod \$m"; done
mount -t xenfs xenfs /proc/xen
xenstored --pid-file /var/run/xenstored.pid
i=0; while [ ! -S /var/run/xenstored/socket ] && [ \$i -lt 100 ]; do sleep 0.2; i=\$((i+1)); done
timeout \$STEP xen-init-dom0 || fail "xen-init-dom0"
xenconsoled --pid-file=/var/run/xenconsoled.pid --log=guest --log-dir=/var/log/xen/console
ip link set lo up
xsockd --transport xen --log-level debug > /tmp/xsockd.log 2>&1 &
wait_for event=xen_listening /tmp/xsockd.log || fail "xsockd --transport xen did not start"
note "xsockd --transport xen listening"
probe serve \$BYTES > /tmp/serve.log 2>&1 &
timeout \$STEP xl create /etc/xen/domu.cfg || fail "xl create"
note "xl create OK: domid \$(xl domid domu)"
# The domU's console, live, on ours.
(tail -F \$L 2>/dev/null | while read -r line; do echo "domU: \$line"; done) &
wait_for 'XSOCK-PROBE start' \$L || fail "domU did not boot to the probe"
wait_for 'XSOCK-PROBE handshake' \$L || fail "PVCalls handshake"
grep -q 'XSOCK-PROBE handshake ok' \$L || fail "PVCalls handshake failed"
note "handshake done"
for step in download echo LISTENING; do
  wait_for "XSOCK-PROBE \$step" \$L || fail "probe step \$step"
  grep -q "XSOCK-PROBE RESULT" \$L && break
  note "probe step \$step done"
done
if grep -q 'XSOCK-PROBE LISTENING' \$L; then
  probe client 7002 \$BYTES > /tmp/client.log 2>&1 &
  wait_for 'XSOCK-PROBE accept' \$L || fail "probe step accept"
fi
wait_for 'XSOCK-PROBE RESULT' \$L || fail "probe result"
grep -q 'XSOCK-PROBE RESULT: PASS' \$L || fail "the probe reported a failure"
echo "--- xsockd log (last lines)"; tail -n 15 /tmp/xsockd.log
echo "--- dom0 client"; cat /tmp/client.log
note "DOM0 DONE"
finish PASS
EOI
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$C/dom0.cpio.gz"

# ---- 5. boot (-cpu max,-smap: QEMU 7.2 TCG SMAP bug, QEMU issue #249) ----
stamp "boot Xen in QEMU (TCG), at most ${QEMU_TIMEOUT}s"
set +e
timeout "$QEMU_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu max,-smap -m 2048 -smp 2 \
  -display none -serial stdio -monitor none -nic none -no-reboot \
  -kernel "$C/xen.elf" \
  -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 bootscrub=0 noreboot" \
  -initrd "$X/boot/vmlinuz-$KV console=hvc0,$C/dom0.cpio.gz" </dev/null > "$C/serial.log" 2>&1
rc=$?
set -e
tr -d '\r' < "$C/serial.log" > "$C/serial.txt"
stamp "qemu exit $rc (serial console: $C/serial.txt)"
if grep -q '^XSOCK-XEN-REAL: PASS' "$C/serial.txt"; then
  grep -E '^=== |XSOCK-PROBE|event=(frontend_connected|connect_ok|accept|listen)' "$C/serial.txt"
  echo "PASS"
  exit 0
fi
if grep -q '^XSOCK-XEN-REAL: FAIL' "$C/serial.txt"; then
  # dom0 printed its diagnosis: from the first failure onwards, plus the domU's lines.
  sed -n '1,/^=== DIAG/p' "$C/serial.txt" | grep -E '^=== |^domU: .*XSOCK' | grep -v '^=== DIAG'
  sed -n '/^=== DIAG/,$p' "$C/serial.txt"
else
  echo "no verdict from dom0 (qemu exit $rc); the console's relevant lines:"
  grep -E '^=== |domU:|xsockd|XSOCK|event=|Panic|panic|Unhandled|error|Error' "$C/serial.txt" | tail -n 80
fi
echo "FAIL"
exit 1
