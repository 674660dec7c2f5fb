#!/bin/sh
# The fs-verity scenarios, run inside the test VM (kernel with fs-verity) by cfsdist itself.
# Inputs (made on the host by test/vm-verity.test.ts) under /vm:
#   src/          a store with vm/app:v1, vm/run:v1 (signed with keys/stmt; kernel signature
#                 by keys/fsv) and vm/badsig:v1 (kernel signature by a key the VM never trusts)
#   tree/         the files of vm/app:v1, to compare with what mounts read back
#   keys/         stmt.pub (statement key), fsv.der (certificate of the good kernel key)
#   tamper.bin    other content for the tampered object
# Every result is one console line "VM <scenario> <key>=<value>…" (JSON after "json=") that
# the host test parses; free text lines (kernel messages, errors) are pasted with "VM| ".
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TMPDIR=/tmp
C="node /cfsdist/bin/cfsdist"
S=/store
say() { echo "VM $*"; }
paste() { sed 's/^/VM| /'; }
now() { date +%s; }
T0=$(now)
ip link set lo up

# Source server on loopback.
$C --store /vm/src serve --listen 127.0.0.1:7070 --quiet >/tmp/serve.out 2>/tmp/serve.err &
i=0
while ! grep -q 'listening on' /tmp/serve.out 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
say serve listening=$(grep -c 'listening on' /tmp/serve.out)
R=http://127.0.0.1:7070

sums() { (cd "$1" && find . -type f | sort | xargs -r sha256sum); }
meta() { (cd "$1" && find . | sort | while read -r p; do stat -c '%n %f %u %g %s %h' "$p"; [ -L "$p" ] && echo "$p -> $(readlink "$p")"; done); }
object_of() { fsverity digest "$1" | cut -d' ' -f1 | sed 's/^sha256://'; }

# 1. pull into a store on ext4 with the verity feature.
t=$(now)
$C --store $S pull --trust /vm/keys/stmt.pub $R/vm/app:v1 --json >/tmp/pull.json 2>/tmp/pull.err
say pull rc=$? seconds=$(( $(now) - t )) json=$(tr -d '\n' </tmp/pull.json)
paste </tmp/pull.err
$C --store $S fsck --json >/tmp/fsck.json 2>/tmp/fsck.err
say fsck-clean rc=$? json=$(tr -d '\n' </tmp/fsck.json)
BIG=$(object_of /vm/tree/big.bin)
OBJ=$S/objects/$(echo $BIG | cut -c1-2)/$(echo $BIG | cut -c3-)
say measure name=$BIG kernel=$(fsverity measure $OBJ | cut -d' ' -f1 | sed 's/^sha256://')

# 2. kernel mount with verity=require: every file reads back equal.
mkdir -p /mnt/k /mnt/f
sums /vm/tree >/tmp/tree.sums
$C --store $S mount --kernel vm/app:v1 /mnt/k --json >/tmp/mount.json 2>/tmp/mount.err
say mount rc=$? json=$(tr -d '\n' </tmp/mount.json)
paste </tmp/mount.err
grep " /mnt/k " /proc/mounts | paste
sums /mnt/k >/tmp/k.sums
cmp -s /tmp/tree.sums /tmp/k.sums
say readback rc=$? files=$(wc -l </tmp/k.sums)
meta /mnt/k >/tmp/k.meta
$C umount /mnt/k

# 3a. The object of big.bin replaced by other content, fs-verity enabled on it.
dmesg -c >/dev/null
cp /vm/tamper.bin $OBJ.new && fsverity enable $OBJ.new && mv -f $OBJ.new $OBJ
$C --store $S mount --kernel vm/app:v1 /mnt/k --json >/dev/null 2>/tmp/mount.err
cat /mnt/k/big.bin >/tmp/read.out 2>/tmp/read.err
say tamper-other-content rc=$? bytes=$(wc -c </tmp/read.out) err=$(tr ' ' '_' </tmp/read.err)
sums /mnt/k 2>/dev/null | grep -v ' ./big.bin$' >/tmp/k2.sums
grep -v ' ./big.bin$' /tmp/tree.sums | cmp -s - /tmp/k2.sums
say tamper-others-intact rc=$?
dmesg | grep -i -E 'overlay|verity' | paste
$C umount /mnt/k
$C --store $S fsck --json >/tmp/fsck.json 2>/dev/null
say fsck-other-content rc=$? json=$(tr -d '\n' </tmp/fsck.json)

# 3b. The same object replaced by the right content, but without fs-verity.
dmesg -c >/dev/null
cp /vm/tree/big.bin $OBJ.new && mv -f $OBJ.new $OBJ
$C --store $S mount --kernel vm/app:v1 /mnt/k --json >/dev/null 2>/tmp/mount.err
cat /mnt/k/big.bin >/tmp/read.out 2>/tmp/read.err
say tamper-no-verity rc=$? bytes=$(wc -c </tmp/read.out) err=$(tr ' ' '_' </tmp/read.err)
dmesg | grep -i -E 'overlay|verity' | paste
$C umount /mnt/k
$C --store $S fsck --json >/tmp/fsck.json 2>/dev/null
say fsck-no-verity rc=$? json=$(tr -d '\n' </tmp/fsck.json)
$C --store $S fsck --repair --json >/tmp/fsck.json 2>/dev/null
say fsck-repair rc=$? json=$(tr -d '\n' </tmp/fsck.json)
$C --store $S fsck --json >/tmp/fsck.json 2>/dev/null
say fsck-after-repair rc=$?

# 4. The FUSE mount agrees with the kernel mount on every file (content and metadata).
$C --store $S mount --kernel vm/app:v1 /mnt/k >/dev/null 2>&1
sums /mnt/k >/tmp/k.sums
cmp -s /tmp/tree.sums /tmp/k.sums
say readback-after-repair rc=$?
$C --store $S mount --fuse vm/app:v1 /mnt/f >/tmp/fuse.out 2>&1
say fuse-mount rc=$?
paste </tmp/fuse.out
sums /mnt/f >/tmp/f.sums
cmp -s /tmp/k.sums /tmp/f.sums
say fuse-content rc=$? files=$(wc -l </tmp/f.sums)
meta /mnt/f >/tmp/f.meta
meta /mnt/k >/tmp/k.meta
cmp -s /tmp/k.meta /tmp/f.meta
say fuse-meta rc=$? entries=$(wc -l </tmp/f.meta)
diff /tmp/k.meta /tmp/f.meta | head -20 | paste
$C umount /mnt/f
$C umount /mnt/k

# 5. run a container from an image on the verity mount.
$C --store $S pull --trust /vm/keys/stmt.pub $R/vm/run:v1 >/dev/null 2>/tmp/pull.err
say pull-run rc=$?
paste </tmp/pull.err
$C --store $S run --rm vm/run:v1 sh -c 'echo hello-from-the-vm; cat /etc/image-file' >/tmp/run.out 2>/tmp/run.err
say run rc=$? out=$(tr '\n ' '|_' </tmp/run.out)
paste </tmp/run.err
say containers-left n=$(ls $S/containers 2>/dev/null | wc -l)

# 6. Builtin signatures: the kernel checks the image's PKCS#7 signature against .fs-verity.
KEY=$(keyctl padd asymmetric '' %keyring:.fs-verity </vm/keys/fsv.der)
say keyring rc=$? key=$KEY
keyctl show %keyring:.fs-verity | paste
$C --store /store2 pull --trust /vm/keys/stmt.pub $R/vm/app:v1 >/dev/null 2>/tmp/pull.err
say pull-signed rc=$?
$C --store /store2 pull --trust /vm/keys/stmt.pub $R/vm/badsig:v1 >/dev/null 2>/tmp/pull.err
say pull-badsig rc=$?
GOOD=$(ls /store2/fsverity-signatures | grep -c p7s)
say signatures-stored n=$GOOD
IMG=$(ls /store2/images | grep -v '\.' | head -1)
for i in $(ls /store2/images | grep -v '\.'); do
  fsverity dump_metadata signature /store2/images/$i >/dev/null 2>&1
  say image-signature image=$i carries=$(( $? == 0 ))
done
$C --store /store2 mount --kernel --require-signature vm/app:v1 /mnt/k --json >/tmp/mount.json 2>/tmp/mount.err
say sig-good-mount rc=$? json=$(tr -d '\n' </tmp/mount.json)
paste </tmp/mount.err
sums /mnt/k | cmp -s /tmp/tree.sums -
say sig-good-readback rc=$?
$C umount /mnt/k
$C --store /store2 mount --kernel --require-signature vm/badsig:v1 /mnt/k >/tmp/mount.out 2>/tmp/mount.err
say sig-bad-mount rc=$? mounted=$(grep -c " /mnt/k " /proc/mounts)
paste </tmp/mount.err
# The kernel itself: enabling fs-verity with that signature on a copy is refused.
BAD=$(for i in $(ls /store2/fsverity-signatures); do h=${i%.p7s}; fsverity dump_metadata signature /store2/images/$h >/dev/null 2>&1 || echo $h; done | head -1)
cp /store2/images/$BAD /tmp/bad.img
fsverity enable --signature=/store2/fsverity-signatures/$BAD.p7s /tmp/bad.img 2>/tmp/enable.err
say kernel-refuses rc=$? err=$(tr ' ' '_' </tmp/enable.err)
# fs.verity.require_signatures=1: what the kernel then does with unsigned verity files.
echo 1 >/proc/sys/fs/verity/require_signatures
echo unsigned >/tmp/u && fsverity enable /tmp/u 2>/tmp/enable.err
say require-unsigned-enable rc=$? err=$(tr ' ' '_' </tmp/enable.err)
# (The objects' fs-verity carries no signature: unsigned verity files are refused now, so the
# store's probe fails and these mounts need --no-verity; the image itself is still checked.)
$C --store /store2 mount --kernel --no-verity vm/badsig:v1 /mnt/k >/dev/null 2>/tmp/mount.err
say require-bad-mount rc=$? mounted=$(grep -c " /mnt/k " /proc/mounts)
paste </tmp/mount.err
$C --store /store2 mount --kernel --no-verity vm/app:v1 /mnt/k >/dev/null 2>/tmp/mount.err
say require-good-mount rc=$? entries=$(ls -R /mnt/k 2>/dev/null | wc -l)
paste </tmp/mount.err
cat /mnt/k/big.bin >/dev/null 2>/tmp/read.err
say require-object-read rc=$? err=$(tr ' ' '_' </tmp/read.err)
$C umount /mnt/k
echo 0 >/proc/sys/fs/verity/require_signatures

say done seconds=$(( $(now) - T0 ))
