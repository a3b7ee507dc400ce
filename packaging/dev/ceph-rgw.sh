#!/usr/bin/env bash
# A single-node Ceph RADOS Gateway (S3 with Object Lock) on 127.0.0.1, from Debian's packages,
# for developing and testing wormfs's S3 duplicate. Not for records: see docs/OPERATIONS.md.
#
#   packaging/dev/ceph-rgw.sh install     apt-get install the Ceph daemons (root)
#   packaging/dev/ceph-rgw.sh start       install if needed, then a fresh cluster + gateway +
#                                         an S3 user; writes $CEPH_BASE/s3.env
#   packaging/dev/ceph-rgw.sh stop        stop every daemon by its PID file, delete the data
#   packaging/dev/ceph-rgw.sh gw-stop     stop only the gateway (the cluster keeps its data)
#   packaging/dev/ceph-rgw.sh gw-start    start the gateway again
#   packaging/dev/ceph-rgw.sh status
#
# One monitor, one OSD, no manager (the S3 data path does not need one). The OSD is memstore by
# default (RAM, about 120 MB idle; the S3 semantics are the same as bluestore's); OSD_STORE=
# bluestore keeps it in a sparse file. Everything listens on 127.0.0.1 only, every wait is
# bounded, and every daemon is stopped by the PID it wrote.
# Environment: CEPH_BASE (default /tmp/wormfs-ceph), RGW_PORT (7480), OSD_STORE, OSD_SIZE.
set -euo pipefail

CEPH_BASE=${CEPH_BASE:-/tmp/wormfs-ceph}
RGW_PORT=${RGW_PORT:-7480}
OSD_STORE=${OSD_STORE:-memstore}
ACCESS_KEY=${RGW_ACCESS_KEY:-WORMFSDEVACCESSKEY01}
SECRET_KEY=${RGW_SECRET_KEY:-wormfsdevsecretkey00000000000000000000001}
if [ "$OSD_STORE" = memstore ]; then OSD_SIZE=${OSD_SIZE:-3G}; else OSD_SIZE=${OSD_SIZE:-8G}; fi
CONF=$CEPH_BASE/ceph.conf
C="ceph -c $CONF --connect-timeout 20"

say() { echo "ceph-rgw: $*"; }

wait_for() { # wait_for SECONDS WHAT CMD...
    local n=$1 what=$2; shift 2
    for _ in $(seq 1 "$n"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    echo "ceph-rgw: gave up waiting for $what after ${n}s (logs in $CEPH_BASE/log)" >&2
    return 1
}

do_install() {
    command -v radosgw >/dev/null && command -v ceph-mon >/dev/null && return 0
    say "installing ceph-mon ceph-osd ceph-common radosgw (about a minute)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        ceph-mon ceph-osd ceph-common radosgw uuid-runtime curl >/dev/null
}

write_conf() {
    cat > "$CONF" <<EOF
[global]
fsid = $1
mon_host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public_network = 127.0.0.0/8
ms_bind_ipv6 = false
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = $CEPH_BASE/run
admin_socket = $CEPH_BASE/run/\$cluster-\$name.asok
pid_file = $CEPH_BASE/run/\$name.pid
log_file = $CEPH_BASE/log/\$cluster-\$name.log
log_to_stderr = false
err_to_stderr = false
crash_dir = $CEPH_BASE/crash
osd_pool_default_size = 1
osd_pool_default_min_size = 1
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
osd_crush_chooseleaf_type = 0

[client]
keyring = $CEPH_BASE/keyring

[mon]
mon_data = $CEPH_BASE/mon/\$cluster-\$id
keyring = $CEPH_BASE/mon/\$cluster-\$id/keyring
mon_cluster_log_file = $CEPH_BASE/log/\$cluster.log

[osd]
osd_data = $CEPH_BASE/osd/\$cluster-\$id
keyring = $CEPH_BASE/osd/\$cluster-\$id/keyring
osd_objectstore = $OSD_STORE
bluestore_block_create = true
bluestore_block_size = $(numfmt --from=iec "$OSD_SIZE")
bluestore_fsck_on_mkfs = false
memstore_device_bytes = $(numfmt --from=iec "$OSD_SIZE")
osd_memory_target = 1073741824
osd_max_object_name_len = 460
osd_max_object_namespace_len = 64

[client.rgw.a]
rgw_frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw_data = $CEPH_BASE/rgw/\$cluster-\$id
keyring = $CEPH_BASE/rgw/keyring
rgw_enable_usage_log = false
EOF
}

gw_start() {
    radosgw -c "$CONF" -n client.rgw.a
    wait_for 180 "the gateway on 127.0.0.1:$RGW_PORT" curl -sf -o /dev/null "http://127.0.0.1:$RGW_PORT/"
}

do_start() {
    do_install
    if [ -e "$CEPH_BASE/run/mon.a.pid" ]; then
        echo "ceph-rgw: already started in $CEPH_BASE (stop it first)" >&2; exit 1
    fi
    rm -rf "$CEPH_BASE"
    mkdir -p "$CEPH_BASE"/{run,log,crash,mon,osd,rgw/ceph-rgw.a}
    local fsid osd_uuid osd_secret osd_id
    fsid=$(uuidgen)
    write_conf "$fsid"
    ceph-authtool --create-keyring "$CEPH_BASE/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool --create-keyring "$CEPH_BASE/keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$CEPH_BASE/mon.keyring" --import-keyring "$CEPH_BASE/keyring" >/dev/null
    monmaptool --create --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' --fsid "$fsid" \
        "$CEPH_BASE/monmap" >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$CEPH_BASE/monmap" --keyring "$CEPH_BASE/mon.keyring"
    ceph-mon -c "$CONF" -i a
    wait_for 60 "the monitor" $C -s
    say "monitor up"

    osd_uuid=$(uuidgen)
    osd_secret=$(ceph-authtool --gen-print-key)
    echo "{\"cephx_secret\": \"$osd_secret\"}" > "$CEPH_BASE/osd-secret.json"
    osd_id=$($C osd new "$osd_uuid" -i "$CEPH_BASE/osd-secret.json")
    rm -f "$CEPH_BASE/osd-secret.json"
    mkdir -p "$CEPH_BASE/osd/ceph-$osd_id"
    ceph-authtool --create-keyring "$CEPH_BASE/osd/ceph-$osd_id/keyring" \
        --name "osd.$osd_id" --add-key "$osd_secret" >/dev/null
    ceph-osd -c "$CONF" -i "$osd_id" --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1
    ceph-osd -c "$CONF" -i "$osd_id"
    wait_for 120 "the OSD" bash -c "$C osd dump | grep -q '^osd.$osd_id up'"
    say "osd.$osd_id up ($OSD_STORE)"

    $C auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
        -o "$CEPH_BASE/rgw/keyring" >/dev/null
    gw_start
    radosgw-admin -c "$CONF" user create --uid=wormfs-dev --display-name="wormfs dev" \
        --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null
    cat > "$CEPH_BASE/s3.env" <<EOF
AWS_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT
AWS_ACCESS_KEY_ID=$ACCESS_KEY
AWS_SECRET_ACCESS_KEY=$SECRET_KEY
AWS_DEFAULT_REGION=us-east-1
EOF
    say "S3 on http://127.0.0.1:$RGW_PORT; credentials in $CEPH_BASE/s3.env"
}

stop_pid() { # stop_pid NAME: SIGTERM the PID in its file, SIGKILL after 30 s
    local f="$CEPH_BASE/run/$1.pid" p
    [ -e "$f" ] || return 0
    p=$(cat "$f")
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
        kill -TERM "$p"
        for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 1; done
        if kill -0 "$p" 2>/dev/null; then kill -KILL "$p" || true; fi
        say "stopped $1 (pid $p)"
    fi
    rm -f "$f"
}

do_stop() {
    for name in client.rgw.a osd.0 mon.a; do stop_pid "$name"; done
    rm -rf "$CEPH_BASE"
}

do_status() {
    for f in "$CEPH_BASE"/run/*.pid; do
        [ -e "$f" ] || continue
        local p; p=$(cat "$f")
        if kill -0 "$p" 2>/dev/null; then echo "$(basename "$f" .pid) pid $p running"
        else echo "$(basename "$f" .pid) pid $p dead"; fi
    done
}

case "${1:-}" in
    install)  do_install ;;
    start)    do_start ;;
    stop)     do_stop ;;
    gw-stop)  stop_pid client.rgw.a ;;
    gw-start) gw_start ;;
    status)   do_status ;;
    *) echo "usage: $0 install|start|stop|gw-stop|gw-start|status" >&2; exit 2 ;;
esac
