#!/bin/sh
# PID 1 of the cfsdist test VM (busybox in the initramfs). Loads the modules, mounts the root
# disk (/dev/vda: ext4 with the verity feature), runs /vm/scenario.sh chrooted into it with
# its output on the serial console, and powers off. Lines the host reads start with "VM ".
export PATH=/bin
/bin/busybox mkdir -p /proc /sys /dev /newroot
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
for m in virtio_blk libcrc32c erofs overlay loop; do
  /bin/busybox insmod /modules/$m.ko || echo "VM boot: insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i + 1)); done
if ! /bin/busybox mount -t ext4 /dev/vda /newroot; then
  echo "VM boot: cannot mount /dev/vda"
  /bin/busybox poweroff -f
fi
/bin/busybox mount --move /dev /newroot/dev
/bin/busybox mkdir -p /newroot/dev/pts /newroot/dev/shm /newroot/dev/mqueue
/bin/busybox mount --move /proc /newroot/proc
/bin/busybox mount --move /sys /newroot/sys
/bin/busybox mount -t devpts devpts /newroot/dev/pts
/bin/busybox mount -t tmpfs tmpfs /newroot/dev/shm
/bin/busybox mount -t mqueue mqueue /newroot/dev/mqueue
/bin/busybox mount -t tmpfs tmpfs /newroot/run
/bin/busybox mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
echo "VM boot: $(/bin/busybox uname -r), $(/bin/busybox nproc) cpus; running /vm/scenario.sh"
/bin/busybox chroot /newroot /bin/sh /vm/scenario.sh
echo "VM exit $?"
/bin/busybox sync
/bin/busybox umount -l /newroot/run /newroot/dev/mqueue /newroot/dev/shm /newroot/dev/pts 2>/dev/null
/bin/busybox mount -o remount,ro /newroot 2>/dev/null
/bin/busybox poweroff -f
