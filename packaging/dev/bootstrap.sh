#!/usr/bin/env bash
# Sets up everything wormfs needs on a fresh Debian machine (as root), then runs one job:
#   bash packaging/dev/bootstrap.sh demo   create a demo store with a mirror, print its status
#   bash packaging/dev/bootstrap.sh test   run the whole test suite
# Idempotent: a second run reuses the apt packages and the venv (.venv in the checkout).
set -euo pipefail
job=${1:-test}
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"

need_apt=()
for pkg in fuse3 libfuse3-dev pkg-config b3sum attr rsync e2fsprogs gcc python3-venv python3-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "== installing ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv
fi
echo "== installing wormfs and its test extras into .venv"
.venv/bin/python -m pip install -q --upgrade pip
# The Cython extension must build: there is no pure-Python fallback.
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import wormfs._chunker" || { echo "the Cython chunker did not build" >&2; exit 1; }

case "$job" in
    demo)
        demo=${WORMFS_DEMO_DIR:-/tmp/wormfs-demo}
        if [ -e "$demo" ]; then
            echo "== $demo exists; remove it for a fresh demo (records in it are retained)" >&2
        else
            # Local directories on one disk: allowed for the demo, reported as such.
            .venv/bin/wormfs mkfs "$demo/store" --mirror "$demo/mirror" --allow-same-device \
                --label demo --default-retention 6y
        fi
        echo
        .venv/bin/wormfs status "$demo/store" || true
        echo
        echo "The mount arrives with the next release; meanwhile try:"
        echo "  .venv/bin/wormfs status $demo/store --json"
        echo "  .venv/bin/wormfs clock $demo/store"
        ;;
    test)
        exec .venv/bin/python -m pytest -q tests
        ;;
    *)
        echo "usage: $0 demo|test" >&2
        exit 2
        ;;
esac
