#!/bin/bash
# Real Xen under QEMU: Xen 4.17 + Debian's 6.1 kernel as PV dom0 and PV domU, booted by
# qemu-system-x86_64 -accel tcg (no VT-x needed). dom0 runs the tree's
# `xsockd --transport xen` and loopback servers; the domU's guest config has xl's
# `pvcalls = [ "backend=0" ]`. Two modes:
#   probe  the domU runs tests/xen-real/probe.cc (TestFront over the real Xen libraries,
#          static): download, echo, listen/accept through dom0, byte-checked.
#   front  the domU runs `xsockd --front xen` and unmodified programs under libxsock.so:
#          curl downloads a file from dom0's httpd (sha256 compared), xsock-stream-check
#          echoes through dom0's xsock-echo-server (epoll-et, hash-checked both ways), and
#          a domU xsock-echo-server listening through dom0 serves dom0's xsock-stream-check.
# The verdict is dom0's line "XSOCK-XEN-REAL: PASS|FAIL (why)" on the serial console; every
# wait inside the guests is bounded by STEP seconds and any failure prints a diagnosis
# (xl list, xenstore-ls -f, xsockd's log, the domU console, dmesg) before powering off.
#
# usage: run.sh XSOCKD [BYTES]
#        run.sh --front XSOCKD XSOCK_LIB STREAM_CHECK ECHO_SERVER [BYTES]
#   XSOCKD  the built xsockd (meson: backend/xsockd, configured with -Dxen=enabled)
#   BYTES   per transfer (default 1 MiB; see README.md for the measured speed)
# Environment: XSOCK_XEN_STEP (seconds per step in the guests, default 60),
#   XSOCK_XEN_TIMEOUT (QEMU's bound, default 600), XSOCK_XEN_CACHE (default
#   <repo>/.cache/xen-real, git-ignored: the .deb files and their extracted tree, reused).
# Needs root (apt-get download), qemu-system-x86, cpio, g++, libxen-dev (setup-deps.sh).
set -euo pipefail
MODE=probe
if [ "${1:-}" = --front ]; then
  MODE=front
  shift
  [ $# -ge 4 ] || { echo "usage: run.sh --front XSOCKD XSOCK_LIB STREAM_CHECK ECHO_SERVER [BYTES]" >&2; exit 2; }
  XSOCK_LIB=$(readlink -f "$2") STREAM_CHECK=$(readlink -f "$3") ECHO_SERVER=$(readlink -f "$4")
  set -- "$1" "${@:5}"   # XSOCKD [BYTES]
fi
[ $# -ge 1 ] || { echo "usage: run.sh XSOCKD [BYTES] | --front XSOCKD XSOCK_LIB STREAM_CHECK ECHO_SERVER [BYTES]" >&2; exit 2; }
XSOCKD=$(readlink -f "$1")
BYTES=${2:-1048576}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
C=${XSOCK_XEN_CACHE:-$REPO/.cache/xen-real}
QEMU_TIMEOUT=${XSOCK_XEN_TIMEOUT:-600}
STEP=${XSOCK_XEN_STEP:-60}
for t in qemu-system-x86_64 cpio g++ apt-get dpkg readelf gunzip; do
  command -v "$t" >/dev/null || { echo "xen-real: $t is missing (tools/setup-deps.sh)"; exit 1; }
done
mkdir -p "$C"
t0=$(date +%s)
stamp() { echo "[xen-real +$(( $(date +%s) - t0 ))s] $*"; }

# ---- 1. Debian packages (downloaded once into the cache, not installed) ----
KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then apt-get update -qq; KPKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); fi
KV=${KPKG#linux-image-}
PKGS="$KPKG xen-hypervisor-4.17-amd64 busybox-static xen-utils-4.17 xen-utils-common
  xenstore-utils libxencall1 libxenevtchn1 libxenforeignmemory1 libxengnttab1 libxenmisc4.17
  libxenstore4 libxentoollog1 libxendevicemodel1 libxenhypfs1 libxentoolcore1 libyajl2
  liblzma5 libuuid1 libzstd1 zlib1g libc6 libgcc-s1"
X=$C/x
if [ ! -f "$C/extracted-$KV" ]; then
  stamp "apt-get download into $C/debs"
  rm -rf "$C/debs" "$X"; mkdir -p "$C/debs" "$X"
  # shellcheck disable=SC2086
  if ! (cd "$C/debs" && apt-get download -qq -o APT::Sandbox::User=root $PKGS); then
    apt-get update -qq
    (cd "$C/debs" && apt-get download -qq -o APT::Sandbox::User=root $PKGS)
  fi
  for d in "$C"/debs/*.deb; do dpkg -x "$d" "$X"; done
  # Only Xen's modules of the kernel package are used: drop the rest (~400 MB).
  find "$X/lib/modules/$KV/kernel" -mindepth 1 -maxdepth 1 ! -name drivers -exec rm -rf {} +
  find "$X/lib/modules/$KV/kernel/drivers" -mindepth 1 -maxdepth 1 ! -name xen -exec rm -rf {} +
  rm -rf "$X/usr/share/doc" "$X/usr/share/man" "$X/usr/share/locale"
  touch "$C/extracted-$KV"
fi
KM=$X/lib/modules/$KV/kernel/drivers/xen
for f in "$X/boot/xen-4.17-amd64.gz" "$X/boot/vmlinuz-$KV" "$KM/xen-evtchn.ko" "$X/bin/busybox"; do
  [ -f "$f" ] || { echo "xen-real: $f missing in the cache; remove $C/extracted-$KV to rebuild it"; exit 1; }
done
gunzip -c "$X/boot/xen-4.17-amd64.gz" > "$C/xen.elf"   # 32-bit multiboot ELF for -kernel

# ---- 2. the probe, static against libxen-dev's archives ----
stamp "build probe"
g++ -std=c++20 -O2 -Wall -Wextra -Werror -static -I"$REPO" -o "$C/probe" \
  "$HERE/probe.cc" "$REPO/tests/xen/test_front.cc" "$REPO/tests/xen/xen_double.cc" \
  "$REPO/backend/xen/xen_api_real.cc" "$REPO/shared/pvcalls.cc" \
  -lxengnttab -lxenevtchn -lxenstore -lxentoolcore -lxentoollog -lpthread 2>&1 \
  | { grep -v 'statically linked' || true; }

# copy_elf ROOT FILE: FILE's NEEDED libraries, recursively, into ROOT/lib/x86_64-linux-gnu,
# taken from the extracted packages or else from the host (xsockd's fmt/abseil/toml++,
# curl's libraries: the host is Debian 12 like the guests).
find_lib() {
  local n=$1 d
  for d in "$X/lib/x86_64-linux-gnu" "$X/usr/lib/x86_64-linux-gnu" /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/$n" ] && { echo "$d/$n"; return; }
  done
  echo "missing library $n" >&2; exit 1
}
copy_elf() {
  local root=$1 lib p
  mkdir -p "$root/lib/x86_64-linux-gnu" "$root/lib64"
  for lib in $(readelf -d "$2" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [ -e "$root/lib/x86_64-linux-gnu/$lib" ] && continue
    p=$(find_lib "$lib")
    cp -L "$p" "$root/lib/x86_64-linux-gnu/$lib"
    copy_elf "$root" "$p"
  done
  if [ ! -e "$root/lib64/ld-linux-x86-64.so.2" ]; then
    cp -L "$(find_lib ld-linux-x86-64.so.2)" "$root/lib/x86_64-linux-gnu/"
    ln -sf ../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$root/lib64/ld-linux-x86-64.so.2"
  fi
}

# ---- 3. domU initramfs ----
# Front mode: the epoll echo moves BYTES each way; curl's file and the dom0 client of the
# domU's listener move at most 16 MiB, the no-Xen control echo at most 4 MiB (TCG is slow:
# ~0.5-2 MiB/s through the front).
SMALL=$(( BYTES < 16777216 ? BYTES : 16777216 ))
CONTROL=$(( BYTES < 4194304 ? BYTES : 4194304 ))
stamp "build images ($MODE mode, $BYTES bytes per transfer)"
D=$C/domurd; rm -rf "$D"; mkdir -p "$D"/{bin,proc,sys,dev,run,tmp,lib/modules}
cp "$X/bin/busybox" "$D/bin/"
cp "$KM/xen-gntalloc.ko" "$KM/xen-evtchn.ko" "$D/lib/modules/"
if [ $MODE = probe ]; then
  cp "$C/probe" "$D/bin/"
  DOMU_RUN="echo 'XSOCK-PROBE start'
/bin/probe front $BYTES $((STEP - 10)); echo \"XSOCK-PROBE exit \$?\""
else
  cp "$XSOCKD" "$STREAM_CHECK" "$ECHO_SERVER" "$(command -v curl)" "$D/bin/"
  cp "$XSOCK_LIB" "$D/lib/libxsock.so"
  for f in "$D/bin/xsockd" "$D/bin/curl" "$D/bin/$(basename "$STREAM_CHECK")" \
           "$D/bin/$(basename "$ECHO_SERVER")" "$D/lib/libxsock.so"; do copy_elf "$D" "$f"; done
  SC=$(basename "$STREAM_CHECK") ES=$(basename "$ECHO_SERVER")
  # Routed: loopback. Each program is unmodified; libxsock.so sends its sockets to the
  # front, which carries them to dom0 over PVCalls.
  DOMU_RUN="export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
ip link set lo up
xsockd --front xen --socket /run/xsockd.sock --log-level debug > /tmp/front.log 2>&1 &
fpid=\$!
i=0; while [ ! -S /run/xsockd.sock ] && [ \$i -lt $((STEP * 5)) ]; do sleep 0.2; i=\$((i+1)); done
echo 'XSOCK-FRONT start'
R='env LD_PRELOAD=/lib/libxsock.so XSOCK_SOCKET=/run/xsockd.sock XSOCK_ROUTE=127.0.0.0/8'
t=\$(cut -d' ' -f1 /proc/uptime)
\$R curl -sS --max-time $STEP -o /tmp/file http://127.0.0.1:8080/file; rc=\$?
h=\$(sha256sum /tmp/file | cut -d' ' -f1)
echo \"XSOCK-FRONT curl sha256=\$h exit=\$rc size=\$(wc -c < /tmp/file) from=\$t to=\$(cut -d' ' -f1 /proc/uptime)\"
if [ \$(wc -c < /tmp/file) -gt 0 ]; then
  seq -w 1 \$(($SMALL / 8 + 1)) | head -c $SMALL > /tmp/want
  if ! cmp -s /tmp/file /tmp/want; then
    echo \"XSOCK-FRONT curl first difference: \$(cmp /tmp/file /tmp/want 2>&1 | head -n 1); differing bytes: \$(cmp -l /tmp/file /tmp/want 2>/dev/null | wc -l)\"
    off=\$(cmp -l /tmp/file /tmp/want 2>/dev/null | head -n 1 | awk '{print \$1 - 1}')
    echo \"XSOCK-FRONT curl got at \$off: \$(dd if=/tmp/file bs=1 skip=\$off count=48 2>/dev/null | od -An -c | tr -s ' ' | tr '\\n' ' ')\"
    cmp -l /tmp/file /tmp/want 2>/dev/null | awk 'NR == 1 || \$1 != p + 1 { if (NR > 1) print s \"-\" p; s = \$1 } { p = \$1 } END { print s \"-\" p }' | head -n 20 | tr '\\n' ' ' | sed 's/^/XSOCK-FRONT curl differing ranges: /'; echo
  fi
fi
rm -f /tmp/file /tmp/want
# Control: the same echo through a second, ordinary xsockd (the domU's own kernel stack,
# no Xen) to a domU echo server: tells a fault of the front from one of the local path.
xsockd --socket /run/local.sock --admin-socket none > /tmp/local.log 2>&1 &
$ES --bind 127.0.0.1 --port 7100 > /tmp/les.log 2>&1 &
i=0; while { [ ! -S /run/local.sock ] || [ ! -s /tmp/les.log ]; } && [ \$i -lt $((STEP * 5)) ]; do sleep 0.2; i=\$((i+1)); done
env LD_PRELOAD=/lib/libxsock.so XSOCK_SOCKET=/run/local.sock XSOCK_ROUTE=127.0.0.0/8 $SC --mode epoll-et --bytes $CONTROL --timeout $((STEP - 5)) 127.0.0.1 7100 > /tmp/lsc.log 2>&1
rc=\$?; echo \"XSOCK-FRONT local-control exit=\$rc \$(tail -n 1 /tmp/lsc.log)\"; [ \$rc = 0 ] || { echo \"--- local xsockd log\"; tail -n 5 /tmp/local.log; cat /tmp/les.log; }
t=\$(cut -d' ' -f1 /proc/uptime)
\$R $SC --mode epoll-et --bytes $BYTES --timeout $((STEP - 5)) 127.0.0.1 7000 > /tmp/sc.log 2>&1
rc=\$?
echo \"XSOCK-FRONT echo exit=\$rc from=\$t to=\$(cut -d' ' -f1 /proc/uptime) \$(tail -n 1 /tmp/sc.log)\"
[ \$rc = 0 ] || { echo '--- front log'; tail -n 40 /tmp/front.log; }
# IPv6 to dom0's [::1] (the xsock extension; standard PVCalls has IPv4 only).
t=\$(cut -d' ' -f1 /proc/uptime)
env LD_PRELOAD=/lib/libxsock.so XSOCK_SOCKET=/run/xsockd.sock XSOCK_ROUTE='127.0.0.0/8,[::1]/128' $SC --mode epoll-et --bytes $SMALL --timeout $((STEP - 5)) ::1 7006 > /tmp/sc6.log 2>&1
rc=\$?
echo \"XSOCK-FRONT echo6 exit=\$rc from=\$t to=\$(cut -d' ' -f1 /proc/uptime) \$(tail -n 1 /tmp/sc6.log)\"
[ \$rc = 0 ] || { echo '--- front log'; tail -n 20 /tmp/front.log; }
\$R $ES --bind 127.0.0.1 --port 7002 --max-clients 1 > /tmp/es.log 2>&1 &
es=\$!
i=0; while [ ! -s /tmp/es.log ] && [ \$i -lt $((STEP * 5)) ]; do sleep 0.2; i=\$((i+1)); done
echo \"XSOCK-FRONT LISTENING \$(head -n 1 /tmp/es.log)\"
i=0; while kill -0 \$es 2>/dev/null && [ \$i -lt $STEP ]; do sleep 1; i=\$((i+1)); done
kill \$es 2>/dev/null; wait \$es; echo \"XSOCK-FRONT listen exit=\$? \$(tail -n 1 /tmp/es.log)\"
echo '--- front log'; tail -n 40 /tmp/front.log; echo '--- echo server log'; cat /tmp/es.log
grep -q 'event=front_connected.* ext=1' /tmp/front.log && echo 'XSOCK-FRONT ext=1' || echo 'XSOCK-FRONT ext=0'
# The front dies without a word to XenStore: dom0 must learn it from the command ring's
# unmap notification (extension).
kill -9 \$fpid; wait \$fpid 2>/dev/null; echo 'XSOCK-FRONT front killed'
sleep 3
echo 'XSOCK-FRONT done'"
fi
cat > "$D/init" <<EOI
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in xen-evtchn xen-gntalloc; do insmod /lib/modules/\$m.ko; done
$DOMU_RUN
poweroff -f
EOI
chmod +x "$D/init"
(cd "$D" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$C/domu.cpio.gz"

# ---- 4. dom0 initramfs: busybox, Xen's tools, xsockd, servers, their libraries ----
R=$C/dom0rd; rm -rf "$R"
mkdir -p "$R"/{bin,proc,sys,dev,tmp,srv,boot,etc/xen,lib/modules,lib64,var/lib/xen,var/lib/xenstored,var/run/xen,var/run/xenstored,var/log/xen/console,var/lock}
cp "$X/bin/busybox" "$XSOCKD" "$R/bin/"
[ $MODE = probe ] && cp "$C/probe" "$R/bin/"
[ $MODE = front ] && cp "$STREAM_CHECK" "$ECHO_SERVER" "$R/bin/"
for m in xen-evtchn xen-gntdev xen-gntalloc xen-privcmd xenfs/xenfs; do cp "$KM/$m.ko" "$R/lib/modules/"; done
mkdir -p "$R/usr/lib/xen-4.17/bin" "$R/usr/bin"
for b in xl xenstored xenconsoled xen-init-dom0; do cp -L "$X/usr/lib/xen-4.17/bin/$b" "$R/usr/lib/xen-4.17/bin/"; done
cp -L "$X/usr/bin/xenstore" "$R/usr/bin/"
for f in "$R"/usr/lib/xen-4.17/bin/* "$R/usr/bin/xenstore" "$R"/bin/*; do
  [ "$(basename "$f")" = busybox ] || [ "$(basename "$f")" = probe ] || copy_elf "$R" "$f"
done
cp -L "$X/lib/x86_64-linux-gnu/libgcc_s.so.1" "$R/lib/x86_64-linux-gnu/"   # xl dlopens it
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
memory = 384
vcpus = 1
pvcalls = [ "backend=0" ]
on_poweroff = "destroy"
on_crash = "destroy"
EOC
if [ $MODE = probe ]; then
  DOM0_SERVE="probe serve \$BYTES > /tmp/serve.log 2>&1 &"
  DOM0_CHECK='wait_for "XSOCK-PROBE start" $L || fail "domU did not boot to the probe"
wait_for "XSOCK-PROBE handshake" $L || fail "PVCalls handshake"
grep -q "XSOCK-PROBE handshake ok" $L || fail "PVCalls handshake failed"
note "handshake done"
for step in download echo LISTENING; do
  wait_for "XSOCK-PROBE $step" $L || fail "probe step $step"
  grep -q "XSOCK-PROBE RESULT" $L && break
  note "probe step $step done"
done
if grep -q "XSOCK-PROBE LISTENING" $L; then
  probe client 7002 $BYTES > /tmp/client.log 2>&1 &
  wait_for "XSOCK-PROBE accept" $L || fail "probe step accept"
fi
wait_for "XSOCK-PROBE RESULT" $L || fail "probe result"
grep -q "XSOCK-PROBE RESULT: PASS" $L || fail "the probe reported a failure"'
else
  SC=$(basename "$STREAM_CHECK") ES=$(basename "$ECHO_SERVER")
  # The file is numbered lines (seq -w: equal width), so that the domU can rebuild it and
  # show where a wrong byte came from.
  DOM0_SERVE="seq -w 1 \$(($SMALL / 8 + 1)) | head -c $SMALL > /srv/file
WANT=\$(sha256sum /srv/file | cut -d' ' -f1)
note \"file of $SMALL bytes, sha256=\$WANT\"
httpd -p 127.0.0.1:8080 -h /srv
$ES --bind 127.0.0.1 --port 7000 > /tmp/echo.log 2>&1 &
$ES --bind ::1 --port 7006 > /tmp/echo6.log 2>&1 &"
  # Every step runs even after one failed (one boot reports them all); the first failure
  # is the verdict.
  DOM0_CHECK="wait_for 'XSOCK-FRONT start' \$L || fail 'domU did not boot to the front test'
bad=
wait_for 'XSOCK-FRONT curl' \$L || fail 'curl in the domU'
if grep -q \"XSOCK-FRONT curl sha256=\$WANT\" \$L; then note 'curl download: sha256 equal'; else note 'curl: wrong or no data'; bad=\${bad:-'curl: wrong or no data'}; fi
wait_for 'XSOCK-FRONT local-control' \$L || fail 'local control in the domU'
if grep -q 'XSOCK-FRONT local-control exit=0' \$L; then note 'local control (no Xen) echo verified'; else note 'local control failed'; bad=\${bad:-'local control (no Xen) failed'}; fi
wait_for 'XSOCK-FRONT echo' \$L || fail 'echo in the domU'
if grep -q 'XSOCK-FRONT echo exit=0' \$L; then note 'epoll echo verified'; else note 'echo: stream-check failed'; bad=\${bad:-'echo: stream-check failed'}; fi
wait_for 'XSOCK-FRONT echo6' \$L || fail 'IPv6 echo in the domU'
if grep -q 'XSOCK-FRONT echo6 exit=0' \$L; then note 'IPv6 echo to [::1] verified'; else note 'IPv6 echo failed'; bad=\${bad:-'IPv6 echo: stream-check failed'}; fi
wait_for 'XSOCK-FRONT LISTENING' \$L || fail 'listener in the domU'
t=\$(cut -d' ' -f1 /proc/uptime)
timeout \$STEP $SC --mode epoll-et --bytes $SMALL --timeout \$((STEP - 5)) 127.0.0.1 7002 > /tmp/client.log 2>&1
rc=\$?
echo \"dom0 client to the domU's listener: exit=\$rc from=\$t to=\$(cut -d' ' -f1 /proc/uptime) \$(tail -n 1 /tmp/client.log)\"
[ \$rc = 0 ] || bad=\${bad:-'dom0 client to the domU listener'}
wait_for 'XSOCK-FRONT listen exit' \$L || fail 'domU listener did not finish'
wait_for 'XSOCK-FRONT done' \$L || fail 'domU test did not finish'
if grep -q 'XSOCK-FRONT ext=1' \$L; then note 'xsock extension negotiated (the echoes half-closed through it)'; else bad=\${bad:-'xsock extension not negotiated'}; fi
if grep -q 'event=frontend_gone domid=' /tmp/xsockd.log; then note 'dom0 saw the killed front within 3 s (unmap notification): its sockets freed'; else bad=\${bad:-'dom0 did not see the killed front'}; fi
[ -z \"\$bad\" ] || fail \"\$bad\"
note 'domU listener served dom0 client'"
fi
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
  # Let the domU finish its own report (its front's log) first, bounded.
  i=0; while ! grep -q 'XSOCK-\(FRONT done\|PROBE exit\)' \$L 2>/dev/null && [ \$i -lt 30 ]; do sleep 1; i=\$((i+1)); done
  echo "--- xl list"; xl list 2>&1
  echo "--- xenstore-ls -f"; xenstore-ls -f 2>&1 | head -n 250
  echo "--- xsockd log"; tail -n 80 /tmp/xsockd.log
  echo "--- domU console (last lines)"; tail -n 60 \$L 2>&1 | sed 's/^/domU| /'
  echo "--- dmesg (last lines)"; dmesg | tail -n 30
  echo "--- processes"; ps | grep -v '\\['
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
$DOM0_SERVE
timeout \$STEP xl create /etc/xen/domu.cfg || fail "xl create"
note "xl create OK: domid \$(xl domid domu)"
# The domU's console, live, on ours.
(tail -F \$L 2>/dev/null | while read -r line; do echo "domU: \$line"; done) &
$DOM0_CHECK
echo "--- xsockd log (last lines)"; tail -n 15 /tmp/xsockd.log
# The domU's results from its console log (the live mirror above may miss lines).
grep 'XSOCK-' \$L | sed 's/^/domU> /'
note "DOM0 DONE"
finish PASS
EOI
chmod +x "$R/init"
(cd "$R" && find . | cpio -o -H newc 2>/dev/null | gzip -1) > "$C/dom0.cpio.gz"
stamp "images: dom0 $(du -h "$C/dom0.cpio.gz" | cut -f1), domU $(du -h "$C/domu.cpio.gz" | cut -f1)"

# ---- 5. boot (-smap: QEMU 7.2 TCG SMAP bug, QEMU issue #249; -xsave and no AVX: its XSAVE
# emulation leaks vector registers between Xen domains, README.md "Front mode") ----
stamp "boot Xen in QEMU (TCG), at most ${QEMU_TIMEOUT}s"
set +e
timeout "$QEMU_TIMEOUT" qemu-system-x86_64 -accel tcg -cpu ${XSOCK_XEN_CPU:-max,-smap,-xsave,-avx,-avx2,-avx512f} -m 2048 -smp 2 \
  -display none -serial stdio -monitor none -nic none -no-reboot \
  -kernel "$C/xen.elf" \
  -append "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M dom0_max_vcpus=2 bootscrub=0 noreboot" \
  -initrd "$X/boot/vmlinuz-$KV console=hvc0,$C/dom0.cpio.gz" </dev/null > "$C/serial.log" 2>&1
rc=$?
set -e
tr -d '\r' < "$C/serial.log" > "$C/serial.txt"
stamp "qemu exit $rc (serial console: $C/serial.txt)"
if grep -q '^XSOCK-XEN-REAL: PASS' "$C/serial.txt" &&
   grep -q '^domU> XSOCK-\(PROBE RESULT: PASS\|FRONT done\)' "$C/serial.txt"; then
  grep -E '^=== |^domU> |^dom0 client|event=(frontend_connected|connect_ok|accept|listen|eof) ' "$C/serial.txt"
  echo "PASS ($MODE mode, $BYTES bytes per transfer, $(( $(date +%s) - t0 )) s)"
  exit 0
fi
if grep -q '^XSOCK-XEN-REAL: FAIL' "$C/serial.txt"; then
  # dom0's diagnosis: what happened up to the first failure, then the DIAG block.
  sed -n '1,/^=== DIAG/p' "$C/serial.txt" | grep -E '^=== |^domU: .*XSOCK|^dom0 client' | grep -v '^=== DIAG'
  sed -n '/^=== DIAG/,$p' "$C/serial.txt"
else
  echo "no verdict from dom0 (qemu exit $rc); the console's relevant lines:"
  grep -E '^=== |domU:|xsockd|XSOCK|event=|Panic|panic|Unhandled|error|Error' "$C/serial.txt" | tail -n 80
fi
echo "FAIL ($MODE mode)"
exit 1
