#!/usr/bin/env bash
# Sets up everything wormfs needs on a fresh Debian machine (as root), then runs one job:
#   bash packaging/dev/bootstrap.sh demo   create a demo store with a mirror and mount it
#   bash packaging/dev/bootstrap.sh test   run the whole test suite
# Idempotent: a second run reuses the apt packages and the venv (.venv in the checkout).
set -euo pipefail
job=${1:-test}
here=$(cd "$(dirname "$0")/../.." && pwd)
cd "$here"

need_apt=()
# autoconf, automake, libtool and openssl build and run pjdfstest (tests/external);
# faketime fakes the daemon's clock in tests/hostile/test_clock_attacks.py; cmake, g++,
# libtoml11-dev and libspdlog-dev build LazyFS for the power-cut test (tests/crash);
# eatmydata fills tests/scale's big test store without an fsync per record.
for pkg in fuse3 libfuse3-dev pkg-config b3sum attr rsync e2fsprogs gcc python3-venv python3-dev \
           autoconf automake libtool openssl make faketime cmake g++ libtoml11-dev \
           libspdlog-dev eatmydata; do
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
# The Cython extensions must build: there is no pure-Python fallback.
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import wormfs._chunker, wormfs._procfs" || { echo "the Cython extensions did not build" >&2; exit 1; }

case "$job" in
    demo)
        demo=${WORMFS_DEMO_DIR:-/tmp/wormfs-demo}
        w=.venv/bin/wormfs
        if [ -e "$demo/store" ]; then
            echo "== reusing the demo store in $demo (records in it are retained)"
        else
            # Local directories on one disk: allowed for the demo, reported as such.
            $w mkfs "$demo/store" --mirror "$demo/mirror" --allow-same-device \
                --label demo --default-retention 6y
        fi
        mkdir -p "$demo/mnt"
        if mountpoint -q "$demo/mnt"; then
            echo "== $demo/mnt is already mounted"
        else
            $w mount "$demo/store" "$demo/mnt" -o allow_other
            echo "== mounted $demo/store on $demo/mnt"
        fi
        echo
        $w status "$demo/store" || true
        cat <<EOF

Try (as root):
  echo "trade 1" > $demo/mnt/blotter.txt              # closed = sealed
  getfattr -d -m user.worm $demo/mnt/blotter.txt      # state, serial, digest, retain-until
  b3sum $demo/mnt/blotter.txt                         # equals user.worm.blake3
  echo more >> $demo/mnt/blotter.txt                  # Operation not permitted (audited)
  rm $demo/mnt/blotter.txt                            # Operation not permitted (retained 6y)
  touch -a -d 2035-01-01 $demo/mnt/blotter.txt        # extends retain-until (atime convention)
  setfattr -n user.worm.hold.case-1 -v "SEC inquiry" $demo/mnt/blotter.txt
  rsync -r /etc/apt/ $demo/mnt/apt/                   # legacy tools work unchanged
  getfattr -n user.worm.mirror $demo/mnt/blotter.txt  # synced: durable on the mirror too
  $w status $demo/store                               # units, mirror state and lag, clock
  $w verify $demo/store                               # every record, chunk and event on both units
  $w scrub --repair $demo/store                       # repairs either unit from the other
  $w info $demo/mnt/blotter.txt                       # every field: serial, digest, writer...
  $w ls $demo/mnt --path '/apt/*' --expiring-before 2040-01-01   # the searchable index
  $w audit $demo/mnt --path /blotter.txt              # its history; --verify checks the chain
  $w export $demo/mnt --out /tmp/production.zip       # for an examiner: sha256sum -c, b3sum -c
  $w selftest $demo/mnt                               # every forbidden operation refused?
  $w umount $demo/mnt                                 # returns once everything is durable
EOF
        ;;
    test)
        exec .venv/bin/python -m pytest -q tests
        ;;
    *)
        echo "usage: $0 demo|test" >&2
        exit 2
        ;;
esac
