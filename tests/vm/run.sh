#!/bin/bash
# tests/vm/run.sh -- run a command as root under a kernel with IPVS, booted once with qemu, and
# return its exit code. The test tier for the `ipvs` dataplane (`make test-ipvs`).
#
# The host kernel may lack IPVS; Debian's linux-image-amd64 ships ip_vs*.ko. The guest boots that
# kernel under qemu (TCG: works without hardware virtualisation), mounts the host's root file
# system read-only (virtiofs with qemu's virtiofsd when present, else 9p) with tmpfs overlays on
# /tmp /etc /var /root /home and a tmpfs /run, and runs the command in it: the same venv, checkout
# and tools as the host, and nothing it writes reaches the host.
#
# Usage: tests/vm/run.sh                      run the IPVS test selection ($GRIDLB_VM_TESTS)
#        tests/vm/run.sh 'shell command line'   run it with bash -c in the caller's directory
#        tests/vm/run.sh prog arg...            run argv (quoted safely)
# Env:   GRIDLB_VM_TIMEOUT=900 (whole VM, s)  GRIDLB_VM_MEM=1024 (MiB)  GRIDLB_VM_CPUS=2
#        GRIDLB_VM_FS=auto|virtiofs|9p  GRIDLB_VM_KERNEL=/boot/vmlinuz-VERSION (default: newest)
#        GRIDLB_VM_VERBOSE=1 (kernel console on the terminal)
#        GRIDLB_VM_OUT=DIR: files the guest writes to $GRIDLB_VM_OUT (guest side) are copied there
#        GRIDLB_* variables are passed into the guest.
# Exit:  the command's exit code; 124 = the VM timed out; 125 = the VM could not boot or run it;
#        126 = qemu or the kernel is not installed: a skip (exit 0 with a message) unless
#        GRIDLB_REQUIRE_PRIVILEGED=1, where it is a failure.
# Needs: qemu-system-x86 linux-image-amd64 busybox-static cpio kmod (root: reads /boot, /lib/modules).
# KVM is not used: on some hosts /dev/kvm opens but cannot run a stock kernel; TCG always works.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
TIMEOUT=${GRIDLB_VM_TIMEOUT:-900}
MEM=${GRIDLB_VM_MEM:-1024}
CPUS=${GRIDLB_VM_CPUS:-2}
FS=${GRIDLB_VM_FS:-auto}
VERBOSE=${GRIDLB_VM_VERBOSE:-0}
CACHE=${GRIDLB_VM_CACHE:-/var/tmp/gridlb-vm-cache}
VIRTIOFSD=/usr/lib/qemu/virtiofsd

missing() {
  if [ "${GRIDLB_REQUIRE_PRIVILEGED:-}" = 1 ]; then
    echo "tests/vm/run.sh: FAIL (GRIDLB_REQUIRE_PRIVILEGED=1): $*" >&2; exit 126
  fi
  echo "tests/vm/run.sh: skipped: $*" >&2; exit 0
}

KERNEL=${GRIDLB_VM_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -1 || true)}
[ -n "$KERNEL" ] && [ -r "$KERNEL" ] || missing "no readable /boot/vmlinuz-* (apt-get install linux-image-amd64)"
KV=${KERNEL#/boot/vmlinuz-}
MODDIR=/lib/modules/$KV
command -v qemu-system-x86_64 >/dev/null || missing "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' \
  || missing "/bin/busybox is not static (apt-get install busybox-static)"
command -v cpio >/dev/null || missing "cpio missing (apt-get install cpio)"
ls "$MODDIR"/kernel/net/netfilter/ipvs/ip_vs.ko* >/dev/null 2>&1 || missing "kernel $KV has no ip_vs module"
[ "$FS" = auto ] && { [ -x "$VIRTIOFSD" ] && FS=virtiofs || FS=9p; }

# ---------- initramfs: busybox + the modules to reach the host's root; built once per kernel ------
INITRD=$CACHE/initramfs-$KV.cpio.gz
if [ ! -s "$INITRD" ] || [ "$0" -nt "$INITRD" ]; then
  mkdir -p "$CACHE"
  W=$(mktemp -d "$CACHE/build.XXXXXX")
  mkdir -p "$W"/{bin,sbin,dev,proc,sys,mods,newroot,rw,job}
  cp /bin/busybox "$W/bin/busybox"
  : > "$W/mods.order"
  for mod in virtio_pci 9pnet_virtio 9p virtiofs overlay; do
    modprobe -S "$KV" --show-depends "$mod" 2>/dev/null | awk '$1=="insmod"{print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$W/mods/"; basename "$ko" >> "$W/mods.order"
  done
  cat > "$W/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods.order); do
  case "$m" in *.xz) xz -dc "/mods/$m" > /tmp.ko && insmod /tmp.ko ;; *) insmod "/mods/$m" ;; esac
done
die() { echo "gridlb-vm(init): $*" > /dev/ttyS0; echo "gridlb-vm(init): $*" > /dev/ttyS1; echo b > /proc/sysrq-trigger; }
o="trans=virtio,version=9p2000.L,msize=524288"
case " $(cat /proc/cmdline) " in
  *" gridlbvm.fs=virtiofs "*) rootmnt="mount -t virtiofs -o ro hostroot /newroot" ;;
  *) rootmnt="mount -t 9p -o $o,ro,cache=loose hostroot /newroot" ;;
esac
for i in 1 2 3 4 5 6 7 8 9 10; do $rootmnt 2>/dev/null && break; sleep 0.2; done
grep -q " /newroot " /proc/mounts || die "cannot mount the host root ($rootmnt)"
mount -t 9p -o "$o" job /job || die "cannot mount the job directory"
mount -t tmpfs -o mode=0755 rw /rw
for d in tmp etc var root home; do
  [ -d "/newroot/$d" ] || continue
  mkdir -p "/rw/$d/u" "/rw/$d/w"
  mount -t overlay -o "lowerdir=/newroot/$d,upperdir=/rw/$d/u,workdir=/rw/$d/w" overlay "/newroot/$d" || die "overlay $d"
done
chmod 1777 /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev; mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts; mount -t tmpfs shm /newroot/dev/shm
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup 2>/dev/null
mkdir -p /newroot/run/gridlb-vm-out /job/out && mount --bind /job/out /newroot/run/gridlb-vm-out
cp /job/cmd.sh /newroot/run/gridlb-vm-cmd.sh
hostname gridlb-vm
# The kernel runs its modprobe helper in this (initramfs) root: chroot it into the host's.
printf '#!/bin/busybox sh\nexec /bin/busybox chroot /newroot /sbin/modprobe "$@"\n' > /sbin/gridlb-modprobe
chmod +x /sbin/gridlb-modprobe; echo /sbin/gridlb-modprobe > /proc/sys/kernel/modprobe
# IPVS refuses DR/NAT destinations while lo is down (no local routing table).
ip link set lo up
stty -F /dev/ttyS0 -onlcr raw 2>/dev/null
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root TERM=dumb LANG=C.UTF-8 GRIDLB_VM_OUT=/run/gridlb-vm-out GRIDLB_IN_VM=1 \
  /bin/bash /run/gridlb-vm-cmd.sh < /dev/null > /dev/ttyS0 2>&1
echo $? > /job/rc
sync; umount /newroot/run/gridlb-vm-out 2>/dev/null; umount /job
echo b > /proc/sysrq-trigger
INIT
  chmod +x "$W/init"
  (cd "$W" && find . | cpio -o -H newc --quiet | gzip -1) > "$W.cpio.gz"
  mv "$W.cpio.gz" "$INITRD"; rm -rf "$W"   # atomic: a concurrent run never sees half a file
fi

# ---------- the job: the command, its environment, and where its exit code comes back ----------
JOB=$(mktemp -d -t gridlb-vm-job.XXXXXX)
VPID=
cleanup() { [ -n "$VPID" ] && { kill "$VPID" 2>/dev/null || true; wait "$VPID" 2>/dev/null || true; }; rm -rf "$JOB"; }
trap cleanup EXIT
mkdir -p "$JOB/out"
{
  echo "set -e"
  { env | grep -E '^GRIDLB_[A-Z0-9_]*=' | grep -v '^GRIDLB_VM_' || true; } | while IFS='=' read -r k v; do
    printf 'export %s=%q\n' "$k" "$v"; done
  echo "set +e"
  echo "cd $(printf %q "$PWD") 2>/dev/null || cd /"
  if [ $# -eq 0 ]; then
    printf '%q -m pytest -q -p no:cacheprovider -m ipvs %s\n' "$ROOT/.venv/bin/python" "${GRIDLB_VM_TESTS:-tests}"
  elif [ $# -eq 1 ]; then printf '%s\n' "$1"
  else printf '%q ' "$@"; echo; fi
} > "$JOB/cmd.sh"

APPEND="console=ttyS1 reboot=t panic=-1 rdinit=/init gridlbvm.fs=$FS"
[ "$VERBOSE" = 1 ] && APPEND="$APPEND console=ttyS0" || APPEND="$APPEND quiet"
if [ "$FS" = virtiofs ]; then
  # qemu 7.2's virtiofsd has no read-only mode: the guest mounts it read-only, under tmpfs overlays.
  "$VIRTIOFSD" --socket-path="$JOB/vfs.sock" -o source=/ -o cache=always -o sandbox=chroot \
    -o log_level=err 2> "$JOB/virtiofsd.log" &
  VPID=$!
  for _ in $(seq 100); do [ -S "$JOB/vfs.sock" ] && break; sleep 0.05; done
  ROOTFS=(-object "memory-backend-memfd,id=mem,size=${MEM}M,share=on" -numa node,memdev=mem
          -chardev "socket,id=vfs,path=$JOB/vfs.sock" -device vhost-user-fs-pci,chardev=vfs,tag=hostroot)
else
  ROOTFS=(-fsdev local,id=r,path=/,readonly=on,security_model=none,multidevs=remap
          -device virtio-9p-pci,fsdev=r,mount_tag=hostroot)
fi
set +e
# q35 + virtio-pci (microvm hangs in early boot under TCG with this kernel); ttyS0 = the command's
# output, ttyS1 = the kernel console (shown when the guest fails).
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 -M q35 -nodefaults -accel tcg,thread=multi -cpu max \
  -m "$MEM" -smp "$CPUS" -display none -no-reboot -monitor none \
  -serial stdio -serial "file:$JOB/console.log" \
  -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" "${ROOTFS[@]}" \
  -fsdev "local,id=j,path=$JOB,security_model=none" -device virtio-9p-pci,fsdev=j,mount_tag=job < /dev/null
QRC=$?
set -e
if [ $QRC -eq 124 ]; then
  echo "tests/vm/run.sh: the VM timed out after ${TIMEOUT}s; kernel console:" >&2
  tail -n 30 "$JOB/console.log" >&2 2>/dev/null || true
  exit 124
fi
if [ -n "${GRIDLB_VM_OUT:-}" ]; then mkdir -p "$GRIDLB_VM_OUT"; cp -a "$JOB/out/." "$GRIDLB_VM_OUT/"; fi
if [ ! -s "$JOB/rc" ]; then
  echo "tests/vm/run.sh: no exit code from the guest (qemu rc=$QRC); kernel console:" >&2
  tail -n 30 "$JOB/console.log" >&2 2>/dev/null || true
  exit 125
fi
exit "$(cat "$JOB/rc")"
