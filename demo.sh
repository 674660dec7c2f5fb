#!/usr/bin/env bash
# Installs what the demo needs on a fresh machine, then runs `cfsdist demo`.
set -euo pipefail
cd "$(dirname "$0")"
if [ "$(id -u)" = 0 ] && ! { command -v debootstrap && command -v runc; } >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    erofs-utils fsverity fuse3 attr skopeo umoci debootstrap zstd runc >/dev/null
fi
[ -d node_modules ] || npm ci --no-audit --no-fund
exec node bin/cfsdist demo "$@"
