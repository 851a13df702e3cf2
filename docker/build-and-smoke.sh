#!/usr/bin/env bash
# Build the edge-cdn image from a Debian base made with debootstrap (no registry needed), run an
# origin and an edge container from it, and check what a user of the image relies on.
#
#   docker/build-and-smoke.sh        exit 0: every check ok; 1: a check failed;
#                                    77: "skipped: REASON" (this machine cannot run containers)
#
# Environment: EDGE_IMAGE (tag to build, default localhost/edge-cdn:dev), EDGE_DOCKER_STATE
# (cache dir, default /var/tmp/edge-cdn-docker), EDGE_DEBIAN_MIRROR, EDGE_CA_BUNDLE,
# EDGE_SMOKE_KEEP_IMAGE (default 1: keep the image, so a re-run reuses its layers).
set -euo pipefail
# shellcheck source=docker/lib.sh
source "$(dirname "$0")/lib.sh"

RUN_ID="edge-smoke-$$"
NET="$RUN_ID-net"
WORK=""
cleanup() {
    local rc=$?
    podman rm -f -t 2 "$RUN_ID-edge" "$RUN_ID-origin" >/dev/null 2>&1 || true
    podman network rm -f "$NET" >/dev/null 2>&1 || true
    [ -n "$WORK" ] && rm -rf "$WORK"
    lib_cleanup
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T0=$SECONDS
setup_podman
sweep_stale edge-smoke-
build_image
echo "image $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}'), built/reused in $((SECONDS - T0)) s"

WORK=$(mktemp -d /var/tmp/edge-smoke.XXXXXX)
# A dev CA and a localhost leaf, made by the project's own code in the image, mounted read-only.
mkdir -p "$WORK/certs"
timeout 60 podman run --rm --no-healthcheck --network none --user 0 -v "$WORK/certs:/certs:Z" "$IMAGE" \
    python -c "from pathlib import Path; from edge.wiring.devcert import ensure_dev_cert; ensure_dev_cert(Path('/certs'))"
chmod 0644 "$WORK/certs/key.pem"   # a throwaway test key; the container user must read it

podman network create "$NET" >/dev/null
timeout 60 podman run -d --no-healthcheck --name "$RUN_ID-origin" --network "$NET" --network-alias origin "$IMAGE" \
    python -m origin serve --root /srv/site --listen 0.0.0.0:8000 >/dev/null 2>"$WORK/run.err" \
    || { cat "$WORK/run.err"; echo "FAIL starting the origin container"; exit 1; }
timeout 60 podman run -d --name "$RUN_ID-edge" --network "$NET" \
    -p 127.0.0.1::8080/tcp -p 127.0.0.1::8443/tcp -p 127.0.0.1::8443/udp -p 127.0.0.1::9090/tcp \
    -v "$WORK/certs:/certs:ro,Z" \
    -e EDGE_UPSTREAM=http://origin:8000 -e EDGE_NAME=smoke-edge \
    -e EDGE_CERT=/certs/cert.pem -e EDGE_KEY=/certs/key.pem \
    -e 'EDGE_ALT_SVC=h3=":8443"; ma=60' "$IMAGE" >/dev/null 2>"$WORK/run.err" \
    || { cat "$WORK/run.err"; echo "FAIL starting the edge container"; exit 1; }

port() { podman port "$RUN_ID-edge" "$1" | head -1 | sed 's/.*://'; }
HTTP_PORT=$(port 8080/tcp); QUIC_PORT=$(port 8443/udp); ADMIN_PORT=$(port 9090/tcp)
echo "edge published on 127.0.0.1: http $HTTP_PORT, h3/udp $QUIC_PORT, admin $ADMIN_PORT"

probe() { timeout 30 python3 "$REPO/docker/probe.py" "$@"; }
healthz() { probe http "http://127.0.0.1:$ADMIN_PORT/healthz" | grep -q '^200 '; }
if ! wait_for 60 healthz; then
    echo "FAIL edge did not answer /healthz within 60 s"; podman logs --tail 30 "$RUN_ID-edge" 2>&1
    exit 1
fi
origin_up() { podman exec "$RUN_ID-edge" python -c "import urllib.request as u; u.urlopen('http://origin:8000/robots.txt', timeout=2)"; }
wait_for 60 origin_up || { echo "FAIL origin not reachable from the edge"; podman logs --tail 30 "$RUN_ID-origin"; exit 1; }

URL="http://127.0.0.1:$HTTP_PORT/robots.txt"
first=$(probe http "$URL" || true); second=$(probe http "$URL" || true)
echo "  GET /robots.txt #1: $first"
echo "  GET /robots.txt #2: $second"
check "first GET is a MISS (X-Cache, Cache-Status)" \
    bash -c '[[ "$1" == "200 MISS |"*smoke-edge*fwd=* ]]' _ "$first"
check "second GET is a HIT (X-Cache, Cache-Status)" \
    bash -c '[[ "$1" == "200 HIT |"*smoke-edge*hit* ]]' _ "$second"

# HTTP/3 over the published UDP port, verified against the dev CA.
if python3 -c "import aioquic" >/dev/null 2>&1; then
    h3=$(probe h3 127.0.0.1 "$QUIC_PORT" /robots.txt "$WORK/certs/ca.pem" 2>&1 || true)
else  # no aioquic on the host: the image has it; run the same client there on the host network
    h3=$(timeout 60 podman run --rm --no-healthcheck --network host -v "$REPO/docker:/probe/docker:ro,Z" \
        -v "$REPO/tests/support:/probe/tests/support:ro,Z" -v "$WORK/certs:/certs:ro,Z" \
        -e PYTHONPATH=/probe "$IMAGE" python /probe/docker/probe.py h3 127.0.0.1 "$QUIC_PORT" /robots.txt /certs/ca.pem 2>&1 || true)
fi
h3_1=$(echo "$h3" | grep -E '^[0-9]{3} ' | sed -n 1p); h3_2=$(echo "$h3" | grep -E '^[0-9]{3} ' | sed -n 2p)
echo "  HTTP/3 GET /robots.txt #1: ${h3_1:-$(echo "$h3" | tail -1)}"
echo "  HTTP/3 GET /robots.txt #2: ${h3_2:--}"
# (The cache key has the scheme: https://... is a new object, so the first HTTP/3 GET fills it.)
check "HTTP/3 over published UDP port: 200, then a HIT on a new connection" \
    bash -c '[[ "$1" == "200 "*smoke-edge* && "$2" == "200 "*smoke-edge*hit* ]]' _ "$h3_1" "$h3_2"

check "/healthz on the admin port" healthz
check "image HEALTHCHECK passes (podman healthcheck run)" \
    timeout 30 podman healthcheck run "$RUN_ID-edge"
# One known failure is tolerated (tests/wiring/test_fleet.py xfail): qh3's first flight to an
# aioquic client raises "packet builder capacity exhausted"; the handshake completes at the PTO.
known='packet builder capacity exhausted'
n_known=$(podman logs "$RUN_ID-edge" 2>&1 | grep -c "^RuntimeError: $known" || true)
[ "$n_known" -gt 0 ] && echo "  note: edge log has $n_known known qh3 first-flight error(s): '$known' (xfail in tests/wiring/test_fleet.py)"
check "edge log has no other exception" \
    bash -c '! podman logs "$1" 2>&1 | grep -E "^[A-Za-z_.]+(Error|Exception)\b" | grep -v "$2" | grep -q .' _ "$RUN_ID-edge" "$known"
uid=$(podman exec "$RUN_ID-edge" id -u); user=$(podman top "$RUN_ID-edge" user | tail -n +2 | sort -u | tr '\n' ' ')
echo "  uid in container: $uid; podman top users: $user"
check "edge process runs as non-root" bash -c '[ "$1" != 0 ] && [[ "$2" != *root* ]]' _ "$uid" "$user"
ouid=$(podman exec "$RUN_ID-origin" id -u)
check "origin process runs as non-root" test "$ouid" != 0
check "no secret or CA bundle left in the image" \
    bash -c '! podman run --rm --no-healthcheck --network none "$1" sh -c "ls /run/secrets/ca /wheels 2>/dev/null | grep -q ."' _ "$IMAGE"

if [ "$FAILED" -ne 0 ]; then
    echo "--- edge log"; podman logs --tail 40 "$RUN_ID-edge" 2>&1 || true
fi
# SIGTERM (podman stop) drains the node and it exits 0, well before podman's 20 s SIGKILL.
t_stop=$SECONDS
timeout 60 podman stop -t 20 "$RUN_ID-edge" >/dev/null 2>&1 || true
code=$(podman inspect --format '{{.State.ExitCode}}' "$RUN_ID-edge" 2>/dev/null || echo "?")
echo "  edge stopped in $((SECONDS - t_stop)) s, exit code $code"
check "SIGTERM: the edge drains and exits 0" test "$code" = 0

echo "total $((SECONDS - T0)) s"
[ "$FAILED" -eq 0 ] || exit 1
exit 0
