#!/usr/bin/env bash
# Bring docker/compose.yaml up with podman-compose (origin, shield-1, shield-2, edge-us,
# edge-eu, edge-ap), fetch one object through each edge (the shield's member in Cache-Status),
# stop the shield that holds it, fetch new objects through each edge (no error), run the
# bounded load generator, tear everything down.
#
#   docker/compose-test.sh     exit 0: every check ok; 1: a check failed; 77: "skipped: REASON"
set -euo pipefail
# shellcheck source=docker/lib.sh
source "$(dirname "$0")/lib.sh"

PROJECT="edgecompose$$"
COMPOSE_FILE="$REPO/docker/compose.yaml"
UP=0
compose() { timeout 300 podman-compose -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }
cleanup() {
    local rc=$?
    if [ "$UP" = 1 ]; then
        compose down -t 2 >/dev/null 2>&1 || true
    fi
    # Whatever podman-compose left: containers, the project network, volumes (by label).
    local ids
    ids=$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null || true)
    [ -n "$ids" ] && podman rm -f -t 2 $ids >/dev/null 2>&1
    podman network rm -f "${PROJECT}_default" >/dev/null 2>&1 || true
    ids=$(podman volume ls -q --filter "label=io.podman.compose.project=$PROJECT" 2>/dev/null || true)
    [ -n "$ids" ] && podman volume rm -f $ids >/dev/null 2>&1
    lib_cleanup
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T0=$SECONDS
setup_podman podman-compose=podman-compose
sweep_stale edgecompose
build_image

# Free loopback ports for the three edges and their admin APIs.
read -r EDGE_US_PORT EDGE_EU_PORT EDGE_AP_PORT EDGE_US_ADMIN_PORT EDGE_EU_ADMIN_PORT EDGE_AP_ADMIN_PORT < <(
    python3 -c "
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(('127.0.0.1', 0))
print(*(s.getsockname()[1] for s in socks))")
export EDGE_IMAGE="$IMAGE" EDGE_US_PORT EDGE_EU_PORT EDGE_AP_PORT EDGE_US_ADMIN_PORT EDGE_EU_ADMIN_PORT EDGE_AP_ADMIN_PORT
declare -A PORT=([edge-us]=$EDGE_US_PORT [edge-eu]=$EDGE_EU_PORT [edge-ap]=$EDGE_AP_PORT)
declare -A ADMIN=([edge-us]=$EDGE_US_ADMIN_PORT [edge-eu]=$EDGE_EU_ADMIN_PORT [edge-ap]=$EDGE_AP_ADMIN_PORT)
EDGES=(edge-us edge-eu edge-ap)

UP=1
# Named services: podman-compose 1.0.3 ignores `profiles`, so the load generator is left out here.
if ! compose up -d origin shield-1 shield-2 edge-us edge-eu edge-ap > "$STATE_DIR/compose-up.log" 2>&1; then
    tail -20 "$STATE_DIR/compose-up.log"; echo "FAIL podman-compose up"; exit 1
fi
echo "compose up in $((SECONDS - T0)) s (edges on 127.0.0.1:${PORT[edge-us]},${PORT[edge-eu]},${PORT[edge-ap]})"

probe() { timeout 30 python3 "$REPO/docker/probe.py" "$@"; }
for e in "${EDGES[@]}"; do
    healthy() { probe http "http://127.0.0.1:${ADMIN[$1]}/healthz" | grep -q '^200 '; }
    check "$e /healthz" wait_for 60 healthy "$e"
done
origin_ok() { probe http "http://127.0.0.1:${PORT[edge-us]}/robots.txt?warmup" | grep -q '^200 '; }
check "origin reachable through edge-us" wait_for 60 origin_ok

OBJ="/assets/app.e445e0a8.js"
declare -A SEEN=()
i=0
for e in "${EDGES[@]}"; do
    # One Host for all edges: the cache key (and so the shield chosen) includes it.
    out=$(probe http "http://127.0.0.1:${PORT[$e]}$OBJ" cdn.example || echo "error")
    echo "  $e GET $OBJ: $out"
    shield=$(grep -oE 'shield-[12]' <<<"$out" | head -1 || true)
    SEEN[${shield:-none}]=1
    check "$e: 200, a MISS at $e, with a shield member in Cache-Status" \
        bash -c '[[ "$1" == "200 MISS |"*"$2; fwd="* && -n "$3" ]]' _ "$out" "$e" "$shield"
    if [ "$i" -gt 0 ]; then  # the shield has it since the first edge's fetch
        check "$e: the shield's member says hit" bash -c '[[ "$1" =~ $2\;\ hit ]]' _ "$out" "$shield"
    fi
    i=$((i + 1))
done
check "every edge went to the same shield for $OBJ (rendezvous hashing)" \
    bash -c '[ "$1" -eq 1 ] && [ "$2" != none ]' _ "${#SEEN[@]}" "${!SEEN[*]}"
HOLDER=$(printf '%s\n' "${!SEEN[@]}" | head -1)
[ "$HOLDER" = none ] && HOLDER="shield-1"

echo "  stopping $HOLDER"
compose stop -t 2 "$HOLDER" >/dev/null 2>&1 || podman stop -t 2 "${PROJECT}_${HOLDER}_1" >/dev/null
errors=0; n=0
for round in 1 2 3; do
    for e in "${EDGES[@]}"; do
        for p in /robots.txt /img/logo.svg /data/manifest.json /index.html; do
            url="http://127.0.0.1:${PORT[$e]}$p?after-stop=$round-$e"
            out=$(probe http "$url" || echo "error")
            n=$((n + 1))
            if [[ "$out" != "200 "* ]]; then errors=$((errors + 1)); echo "  $e GET $p: $out"; fi
            [ "$round" = 1 ] && [ "$p" = /robots.txt ] && echo "  $e GET $p?after-stop (new object): $out"
        done
    done
done
check "$n new objects through the three edges with $HOLDER stopped: $errors errors" test "$errors" -eq 0

# The bounded load generator, run on the project network (what `--profile load` starts).
load=$(timeout 120 podman run --rm --no-healthcheck --network "${PROJECT}_default" -e LOAD_COUNT=20 \
    -e LOAD_EDGES=http://edge-us:8080,http://edge-eu:8080,http://edge-ap:8080 \
    "$IMAGE" python -c "$(python3 -c "import yaml,sys; print(yaml.safe_load(open(sys.argv[1]))['services']['loadgen']['command'][2])" "$COMPOSE_FILE")" 2>&1 || true)
echo "$load" | sed 's/^/  loadgen: /'
check "load generator: 60 requests, all 200" bash -c '[[ "$1" == *"60 requests"* ]] && ! grep -qE "Error|Exception|timeout" <<<"$1"' _ "$load"

echo "total $((SECONDS - T0)) s"
exit "$FAILED"
