#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine: installs what the tests need (as root), then
# runs `npm test`. Without root nothing is installed and the tests that need root or a missing
# tool skip with a printed reason. `npm test` alone is the inner loop.
set -euo pipefail
cd "$(dirname "$0")"
export DEBIAN_FRONTEND=noninteractive
# erofs-utils: mkfs.erofs (bench reference) · fsverity: digest oracle · fuse3: userspace mounts
# attr: getfattr/setfattr (xattrs) · skopeo, umoci: OCI images · docker-registry: a real OCI
# registry (apache2-utils: its htpasswd) · debootstrap: real Debian content · zstd: zstd
# layers · python3: test fixtures · perl: mount syscalls (new mount API) · runc: the OCI
# runtime `cfsdist run` starts · busybox-static: the run tests' image · file: its check ·
# podman, uidmap: the run benchmark's reference · qemu-system-x86, keyutils, e2fsprogs, openssl,
# xz-utils: the fs-verity VM tests (test/vm: qemu boots Debian's kernel package, which the
# harness fetches with apt-get download into /var/cache/cfsdist-vm) · chromium: the web page's
# end-to-end test (test/web-ui.test.ts, driven by playwright-core)
PACKAGES=(erofs-utils fsverity fuse3 attr skopeo umoci docker-registry apache2-utils debootstrap zstd
  python3 perl ca-certificates util-linux diffutils runc busybox-static file podman uidmap
  qemu-system-x86 keyutils e2fsprogs openssl xz-utils chromium)
if [ "$(id -u)" = 0 ]; then
  missing=()
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "test.sh: installing ${missing[*]}" >&2
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "test.sh: not root: nothing installed (tests that need root or the tools will skip, saying why)" >&2
fi
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then npm ci --no-audit --no-fund; fi
exec npm test
