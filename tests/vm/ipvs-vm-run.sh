#!/bin/bash
# ipvs-vm-run.sh -- run one command as root under an IPVS-capable Linux kernel (Debian 12's
# linux-image-amd64, 6.1.x, which ships ip_vs*.ko) booted with qemu, and return its exit code.
#
# The guest sees the host's root filesystem read-only (virtiofs or 9p, virtme-ng style), so it runs the
# host's own ipvsadm, iproute2, python3, venvs, test files. Writable in the guest (tmpfs,
# thrown away at exit): /tmp /etc /var /root /home (overlays on the host's content), /run.
# Artifacts: anything written to $IPVSLAB_OUT (= /run/ipvslab-out in the guest) comes back
# to the host directory given by IPVSLAB_OUT_HOST (if set).
#
# Usage: ipvs-vm-run.sh 'shell command line'        (run via bash -c, cwd = caller's cwd)
#        ipvs-vm-run.sh prog arg1 arg2 ...            (argv, quoted safely)
# Env:   IPVSLAB_ACCEL=tcg|kvm (default tcg; kvm does NOT work on PVM/Firecracker hosts)
#        IPVSLAB_MEM=1024  IPVSLAB_CPUS=2  IPVSLAB_CPU=max (qemu -cpu model for TCG)
#        IPVSLAB_TIMEOUT=600 (seconds, whole VM)   IPVSLAB_KVER=<ver> (default: newest /boot/vmlinuz-*)
#        IPVSLAB_FS=auto|virtiofs|9p (how the host / is shared; auto = virtiofs if /usr/lib/qemu/virtiofsd
#          exists (Debian 12 qemu 7.2 ships it; ~1.5x faster python imports), else 9p)
#        IPVSLAB_OUT_HOST=/some/dir  IPVSLAB_VERBOSE=1 (show kernel console)
# Exit:  the command's exit code; 124 = VM timeout; 125 = VM/boot failure (no rc came back).
# Needs: qemu-system-x86 linux-image-amd64 busybox-static cpio kmod. Tested as host root only; the guest
#        'root' can only read what the invoking host user can read. KVM is not used (it hangs on PVM/Firecracker hosts).
set -euo pipefail

KV=${IPVSLAB_KVER:-$(ls -1 /boot/vmlinuz-* | sed 's|/boot/vmlinuz-||' | sort -V | tail -1)}
KERNEL=/boot/vmlinuz-$KV
MODDIR=/lib/modules/$KV
ACCEL=${IPVSLAB_ACCEL:-tcg}
MEM=${IPVSLAB_MEM:-1024}
CPUS=${IPVSLAB_CPUS:-2}
TIMEOUT=${IPVSLAB_TIMEOUT:-600}
VARTMP=/var/tmp
CACHE=${IPVSLAB_CACHE:-$VARTMP/ipvslab-cache}
VERBOSE=${IPVSLAB_VERBOSE:-0}
VIRTIOFSD=${IPVSLAB_VIRTIOFSD:-/usr/lib/qemu/virtiofsd}
FS=${IPVSLAB_FS:-auto}
[ "$FS" = auto ] && { [ -x "$VIRTIOFSD" ] && FS=virtiofs || FS=9p; }

[ -r "$KERNEL" ] || { echo "ipvs-vm-run: $KERNEL missing (apt-get install linux-image-amd64)" >&2; exit 125; }
[ -e "$MODDIR/kernel/net/netfilter/ipvs/ip_vs.ko" ] || [ -e "$MODDIR/kernel/net/netfilter/ipvs/ip_vs.ko.xz" ] \
  || { echo "ipvs-vm-run: $KV has no ip_vs module" >&2; exit 125; }

# ---------- initramfs (built once per kernel version, cached) ----------
INITRD=$CACHE/initramfs-$KV.cpio.gz
if [ ! -s "$INITRD" ] || [ "$0" -nt "$INITRD" ]; then
  mkdir -p "$CACHE"
  W=$(mktemp -d "$CACHE/build.XXXXXX")
  mkdir -p "$W"/{bin,dev,proc,sys,mods,newroot,rw,job}
  cp /bin/busybox "$W/bin/busybox"   # busybox-static
  file -L /bin/busybox | grep -q 'statically linked' || { echo "need busybox-static" >&2; exit 125; }
  # virtio transports + 9p + virtiofs + overlayfs, in dependency order
  : > "$W/mods.order"
  for m in virtio_pci virtio_mmio 9pnet_virtio 9p virtiofs overlay; do
    modprobe -S "$KV" --show-depends "$m" | awk '$1=="insmod"{print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    b=$(basename "$ko"); cp "$ko" "$W/mods/$b"; echo "$b" >> "$W/mods.order"
  done
  cat > "$W/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods.order); do case "$m" in *.xz) xz -dc /mods/$m > /tmp.ko && insmod /tmp.ko ;; *) insmod /mods/$m ;; esac; done
die() { echo "ipvs-vm-run(init): $*" > /dev/ttyS0; echo "ipvs-vm-run(init): $*" > /dev/ttyS1; echo b > /proc/sysrq-trigger; }
o="trans=virtio,version=9p2000.L,msize=524288"
case " $(cat /proc/cmdline) " in *" ipvslab.fs=virtiofs "*) rootmnt="mount -t virtiofs -o ro hostroot /newroot" ;;
  *) rootmnt="mount -t 9p -o $o,ro,cache=loose hostroot /newroot" ;; esac
for i in 1 2 3 4 5 6 7 8 9 10; do $rootmnt 2>/dev/null && break; sleep 0.2; done
grep -q " /newroot " /proc/mounts || die "cannot mount host root ($rootmnt)"
mount -t 9p -o $o job /job || die "cannot mount job dir"
mount -t tmpfs -o mode=0755 rw /rw
for d in tmp etc var root home; do
  [ -d /newroot/$d ] || continue
  mkdir -p /rw/$d/u /rw/$d/w
  mount -t overlay -o lowerdir=/newroot/$d,upperdir=/rw/$d/u,workdir=/rw/$d/w overlay /newroot/$d || die "overlay $d"
done
chmod 1777 /newroot/tmp
mount -t tmpfs -o mode=0755 run /newroot/run
mount -t proc proc /newroot/proc; mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev; mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts; mount -t tmpfs shm /newroot/dev/shm
mount -t securityfs securityfs /newroot/sys/kernel/security 2>/dev/null
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup 2>/dev/null
mkdir -p /newroot/run/ipvslab-out /job/out && mount --bind /job/out /newroot/run/ipvslab-out
cp /job/cmd.sh /newroot/run/ipvslab-cmd.sh
hostname ipvslab
# request_module() (e.g. ipvsadm -s wlc auto-loading ip_vs_wlc) runs the kernel's modprobe program in
# the *initramfs* root, not in the chroot: point it at a shim that chroots into the host root.
mkdir -p /sbin; printf '#!/bin/busybox sh\nexec /bin/busybox chroot /newroot /sbin/modprobe "$@"\n' > /sbin/ipvslab-modprobe
chmod +x /sbin/ipvslab-modprobe; echo /sbin/ipvslab-modprobe > /proc/sys/kernel/modprobe
# lo must be up: with no local FIB table, IPVS rejects DR/NAT real servers with EINVAL
ip link set lo up
stty -F /dev/ttyS0 -onlcr raw 2>/dev/null
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root TERM=dumb LANG=C.UTF-8 IPVSLAB_OUT=/run/ipvslab-out IPVSLAB_GUEST=1 \
  /bin/bash /run/ipvslab-cmd.sh < /dev/null > /dev/ttyS0 2>&1
echo $? > /job/rc
sync; umount /newroot/run/ipvslab-out 2>/dev/null; umount /job
echo b > /proc/sysrq-trigger   # immediate reboot == qemu exit (-no-reboot)
INIT
  chmod +x "$W/init"
  (cd "$W" && find . | cpio -o -H newc --quiet | gzip -1) > "$W.cpio.gz"
  mv "$W.cpio.gz" "$INITRD"; rm -rf "$W"   # atomic: concurrent runs never see a partial initramfs
fi

# ---------- job ----------
JOB=$(mktemp -d -t ipvslab-job.XXXXXX)
trap 'rm -rf "$JOB"' EXIT
mkdir -p "$JOB/out"
{
  echo "cd $(printf %q "$PWD") 2>/dev/null || cd /"
  if [ $# -eq 1 ]; then printf '%s\n' "$1"; else printf '%q ' "$@"; echo; fi
} > "$JOB/cmd.sh"

case "$ACCEL" in kvm) ACC=(-accel kvm -cpu host) ;; *) ACC=(-accel tcg,thread=multi -cpu "${IPVSLAB_CPU:-max}") ;; esac
# q35 + virtio-pci. (-M microvm + virtio-mmio hung in early boot under TCG with this kernel.)
M=(-M q35 -nodefaults); VDEV=virtio-9p-pci
# ttyS0 = command output (stdio); ttyS1 = kernel console -> $JOB/console.log (shown on failure)
APPEND="console=ttyS1 reboot=t panic=-1 rdinit=/init ipvslab.fs=$FS"
[ "$VERBOSE" = 1 ] && APPEND="$APPEND console=ttyS0" || APPEND="$APPEND quiet"
VPID=
if [ "$FS" = virtiofs ]; then
  # C virtiofsd from qemu 7.2 has no read-only mode: the guest mounts it ro and puts tmpfs overlays on top.
  "$VIRTIOFSD" --socket-path="$JOB/vfs.sock" -o source=/ -o cache=always -o sandbox=chroot -o log_level=err \
    2> "$JOB/virtiofsd.log" &
  VPID=$!
  trap 'kill $VPID 2>/dev/null || true; rm -rf "$JOB"' EXIT
  for i in $(seq 100); do [ -S "$JOB/vfs.sock" ] && break; sleep 0.05; done
  ROOTFS=(-object memory-backend-memfd,id=mem,size=${MEM}M,share=on -numa node,memdev=mem
          -chardev socket,id=vfs,path="$JOB/vfs.sock" -device vhost-user-fs-pci,chardev=vfs,tag=hostroot)
else
  ROOTFS=(-fsdev local,id=r,path=/,readonly=on,security_model=none,multidevs=remap -device $VDEV,fsdev=r,mount_tag=hostroot)
fi
set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 "${M[@]}" "${ACC[@]}" -m "$MEM" -smp "$CPUS" \
  -display none -no-reboot -serial stdio -serial file:"$JOB/console.log" -monitor none \
  -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" \
  "${ROOTFS[@]}" \
  -fsdev local,id=j,path="$JOB",security_model=none -device $VDEV,fsdev=j,mount_tag=job \
  < /dev/null
QRC=$?
[ -n "$VPID" ] && { kill $VPID 2>/dev/null; wait $VPID 2>/dev/null; }
set -e
[ $QRC -eq 124 ] && { echo "ipvs-vm-run: VM timed out after ${TIMEOUT}s; kernel console tail:" >&2; tail -n 30 "$JOB/console.log" >&2 2>/dev/null; exit 124; }
if [ -n "${IPVSLAB_OUT_HOST:-}" ]; then mkdir -p "$IPVSLAB_OUT_HOST"; cp -a "$JOB/out/." "$IPVSLAB_OUT_HOST/"; fi
[ -s "$JOB/rc" ] || { echo "ipvs-vm-run: no exit code from guest (qemu rc=$QRC); kernel console tail:" >&2
                      tail -n 30 "$JOB/console.log" >&2 2>/dev/null; exit 125; }
exit "$(cat "$JOB/rc")"
