#!/usr/bin/env bash
# Install wormfs system-wide from this checkout (as root): the venv's wormfs command as
# /usr/local/bin/wormfs, the mount helper as /sbin/mount.wormfs, and the systemd template.
# Run packaging/dev/bootstrap.sh first (it builds .venv).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$here/.venv/bin/wormfs" ] || { echo "run packaging/dev/bootstrap.sh test first" >&2; exit 1; }
ln -sf "$here/.venv/bin/wormfs" /usr/local/bin/wormfs
install -m 755 "$here/packaging/mount.wormfs" /sbin/mount.wormfs
if [ -d /etc/systemd/system ]; then
    install -m 644 "$here/packaging/wormfs@.service" /etc/systemd/system/wormfs@.service
    systemctl daemon-reload 2>/dev/null || true
fi
echo "installed: /usr/local/bin/wormfs, /sbin/mount.wormfs, wormfs@.service"
