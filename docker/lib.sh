# Shared by docker/build-and-smoke.sh and docker/compose-test.sh (sourced, not run).
# Exit codes: 0 ok, 1 a check failed, 77 skipped (this machine cannot run containers).
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE_DIR=${EDGE_DOCKER_STATE:-/var/tmp/edge-cdn-docker}
IMAGE=${EDGE_IMAGE:-localhost/edge-cdn:dev}
SUITE=bookworm
MIRROR=${EDGE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES="python3,python3-venv,ca-certificates"
CA_BUNDLE=${EDGE_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
FAILED=0   # set by check(), read by the scripts
LIB_TMP=()

lib_cleanup() { [ ${#LIB_TMP[@]} -eq 0 ] || rm -rf "${LIB_TMP[@]}"; }

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
skip() { echo "skipped: $*"; exit 77; }
check() {  # check NAME CMD...: prints "ok NAME" or "FAIL NAME" and remembers a failure
    local name=$1; shift
    # shellcheck disable=SC2034  # FAILED is read by the scripts that source this file
    if "$@"; then echo "ok   $name"; else echo "FAIL $name"; FAILED=1; fi
}

# Wait until CMD succeeds or SECONDS pass; returns 1 on the deadline.
wait_for() {
    local seconds=$1; shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.5
    done
}

# --- podman, its local quirks handled here -------------------------------------------------
need_root_or_skip() {
    if ! command -v podman >/dev/null 2>&1 && [ "$(id -u)" -ne 0 ]; then
        skip "podman is not installed and this user cannot install it (not root)"
    fi
}

install_missing() {  # install_missing CMD=PACKAGE ...
    local missing=() pair
    for pair in "$@"; do
        command -v "${pair%%=*}" >/dev/null 2>&1 || [ -x "${pair%%=*}" ] || missing+=("${pair#*=}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || skip "missing ${missing[*]} and not root to install them"
    command -v apt-get >/dev/null 2>&1 || skip "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -qq >/dev/null 2>&1 || true
    timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
        || skip "cannot install ${missing[*]} with apt-get"
}

setup_podman() {
    need_root_or_skip
    install_missing podman=podman buildah=buildah runc=runc debootstrap=debootstrap \
        slirp4netns=slirp4netns newuidmap=uidmap /usr/lib/podman/netavark=netavark "$@"
    [ "$(id -u)" -eq 0 ] || skip "rootless podman is not supported by these scripts; run as root"
    mkdir -p "$STATE_DIR"
    # Default ulimits below this machine's hard limits (podman's defaults exceed them here and
    # runc then fails to start anything), the runc runtime (crun refuses this cgroup setup) and
    # the cgroupfs manager. One containers.conf for podman, podman build and podman-compose.
    # (Measured here: the hard nofile is 20000, and nproc above kernel.pid_max, 32768, is
    # refused even below the hard 96365: the process has no CAP_SYS_RESOURCE.)
    local hn hu pm
    hn=$(ulimit -Hn); hu=$(ulimit -Hu); pm=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)
    [ "$hn" = unlimited ] && hn=1048576; [ "$hu" = unlimited ] && hu=1048576
    [ "$hn" -gt 65536 ] && hn=65536; [ "$hu" -gt "$pm" ] && hu=$pm
    hn=$((hn * 9 / 10)); hu=$((hu * 9 / 10))
    cat > "$STATE_DIR/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$hn:$hn", "nproc=$hu:$hu"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
    export CONTAINERS_CONF="$STATE_DIR/containers.conf"
    local out
    out=$(timeout 60 podman info --format '{{.Host.OCIRuntime.Name}}' 2>&1) \
        || skip "podman does not work here: $(echo "$out" | tail -1)"
    [ -e /proc/self/ns/user ] || skip "this kernel has no user namespaces"
}

# Containers and networks left by an earlier run that was killed (SIGKILL skips its trap):
# their names carry that run's PID; remove those whose process is gone.
sweep_stale() {  # sweep_stale PREFIX (e.g. edge-smoke- or edgecompose)
    local kind name pid
    for kind in container network; do
        for name in $(podman "$kind" ls -a --format '{{.Names}}' 2>/dev/null \
                      || podman "$kind" ls --format '{{.Name}}' 2>/dev/null); do
            [[ "$name" =~ ^$1([0-9]+)[-_] ]] || continue
            pid=${BASH_REMATCH[1]}
            { [ "$pid" = "$$" ] || kill -0 "$pid" 2>/dev/null; } && continue
            log "removing $kind $name (left by run $pid)"
            podman "$kind" rm -f "$name" >/dev/null 2>&1 || true
        done
    done
}

# --- the base image from Debian's archive (no registry needed) -----------------------------
base_hash() {
    printf '%s\n' "$SUITE" "$MIRROR" "$BASE_PACKAGES" "minbase" "v1" | sha256sum | cut -c1-12
}

ensure_base() {  # sets BASE_IMAGE
    local h; h=$(base_hash)
    BASE_IMAGE="localhost/edge-base:$SUITE-$h"
    if podman image exists "$BASE_IMAGE"; then
        log "base $BASE_IMAGE reused"
    else
        log "building base $BASE_IMAGE with debootstrap ($MIRROR)"
        local dir; dir=$(mktemp -d /var/tmp/edge-base.XXXXXX)
        LIB_TMP+=("$dir")   # removed by lib_cleanup, even when a skip exits from here
        timeout 1200 debootstrap --variant=minbase --include="$BASE_PACKAGES" \
            "$SUITE" "$dir/root" "$MIRROR" > "$dir/debootstrap.log" 2>&1 \
            || skip "debootstrap of $SUITE failed (no Debian mirror?): $(tail -1 "$dir/debootstrap.log")"
        # Smaller base: no package caches, lists, docs, man pages or translations.
        rm -rf "$dir/root"/var/cache/apt/*.bin "$dir/root"/var/cache/apt/archives/*.deb \
            "$dir/root"/var/lib/apt/lists/* "$dir/root"/usr/share/doc/* "$dir/root"/usr/share/man/* \
            "$dir/root"/usr/share/locale/* "$dir/root"/usr/share/info/* "$dir/root"/var/log/*.log
        tar -C "$dir/root" -c . | timeout 600 podman import \
            --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
            --message "debootstrap --variant=minbase $SUITE + $BASE_PACKAGES" - "$BASE_IMAGE" >/dev/null 2>&1 \
            || { echo "FAIL podman import of the base"; exit 1; }
        rm -rf "$dir"
    fi
    podman tag "$BASE_IMAGE" "localhost/edge-base:$SUITE"
    # The machine can run a container at all? (If not, nothing below can work: skip.)
    local out
    out=$(timeout 120 podman run --rm --network none "$BASE_IMAGE" true 2>&1) \
        || skip "podman cannot run a container here: $(echo "$out" | tail -1)"
}

build_image() {
    ensure_base
    local secret=()
    [ -s "$CA_BUNDLE" ] && secret=(--secret "id=ca,src=$CA_BUNDLE")
    log "building $IMAGE from $BASE_IMAGE"
    local t0=$SECONDS
    if ! timeout 1800 podman build --format docker --network host --layers \
        -f "$REPO/docker/Dockerfile" --build-arg "BASE=$BASE_IMAGE" "${secret[@]}" \
        -t "$IMAGE" "$REPO" > "$STATE_DIR/build.log" 2>&1; then
        tail -30 "$STATE_DIR/build.log" >&2
        echo "FAIL image build (log: $STATE_DIR/build.log)"
        exit 1
    fi
    log "image built in $((SECONDS - t0)) s, $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"
}
