#!/usr/bin/env bash
# Play the rendered edge Deployment with podman (no cluster here) and send one request
# through it: a MISS, then a HIT. Exit 0 on success, 1 on failure, 77 ("skipped: ...") when
# podman, kubectl or the image localhost/edge-cdn:latest is missing.
#
#   docker/k8s/play-test.sh [OVERLAY]        # default: us
#   EDGE_IMAGE=localhost/edge-cdn:dev docker/k8s/play-test.sh   # another local tag of the image
#
# What is played: `kubectl kustomize docker/k8s/overlays/OVERLAY`, its Deployment `edge`
# and the ConfigMap it reads, with these changes (podman 4.3's `kube play` takes Pod,
# Deployment, PVC and ConfigMap only, and mounts no Secret volumes), each printed as done:
#   - one replica; the rendered origin container is added to the pod (listening on
#     127.0.0.1:8000) and EDGE_UPSTREAM points at it; EDGE_SHIELDS and EDGE_PURGE_PEERS are
#     emptied (an empty EDGE_* variable leaves the default: no shields);
#   - the Secret edge-admin becomes a podman secret holding the Secret's data as JSON (which is how
#     podman resolves secretKeyRef); the Secret volume edge-tls becomes a hostPath directory
#     holding a throwaway self-signed certificate;
#   - the httpGet probes become exec probes fetching the same path and port with python3
#     (podman turns probes into health checks that run inside the container, where curl
#     may not exist); `podman healthcheck run` then checks the liveness probe for real.
# Everything the script made is removed on exit (trap), whatever happened.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
OVERLAY="${1:-us}"
IMAGE="${EDGE_IMAGE:-localhost/edge-cdn:latest}"   # the image the manifests name, unless overridden
TAG="k8splay$$"
WAIT="${PLAY_WAIT:-90}"

skip() { echo "skipped: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

command -v podman >/dev/null 2>&1 || skip "podman is not installed (apt-get install podman runc catatonit)"
command -v python3 >/dev/null 2>&1 || skip "python3 is missing"
python3 -c "import yaml" 2>/dev/null || skip "python3 has no PyYAML (pip install pyyaml)"
command -v kubectl >/dev/null 2>&1 || skip "kubectl is missing: nothing renders the kustomization"
command -v openssl >/dev/null 2>&1 || skip "openssl is missing (for the throwaway certificate)"
command -v curl >/dev/null 2>&1 || skip "curl is missing"
[ -d "$HERE/overlays/$OVERLAY" ] || fail "no overlay $HERE/overlays/$OVERLAY"

# Podman's runtime here: runc with the cgroupfs manager (crun refuses this machine's cgroup
# setup), default ulimits below the machine's hard limits. Our own containers.conf, for
# this script only.
WORK="$(mktemp -d /tmp/edge-k8s-play.XXXXXX)"
chmod 755 "$WORK"
hard_nofile="$(ulimit -Hn)"; hard_nproc="$(ulimit -Hu)"
lim() { if [ "$1" = unlimited ] || [ "$1" -gt "$2" ]; then echo "$2"; else echo "$1"; fi; }
nofile="$(lim "$hard_nofile" 16384)"; nproc="$(lim "$hard_nproc" 16384)"
cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"
PODMAN=(podman --runtime runc --cgroup-manager cgroupfs)

"${PODMAN[@]}" info >/dev/null 2>&1 || { rm -rf "$WORK"; skip "podman does not work here: $("${PODMAN[@]}" info 2>&1 | tail -1)"; }
"${PODMAN[@]}" image exists "$IMAGE" || { rm -rf "$WORK"; skip "image $IMAGE not built (docker/build-and-smoke.sh builds it)"; }

cleanup() {
    if [ -f "$WORK/play.yaml" ]; then
        "${PODMAN[@]}" kube down "$WORK/play.yaml" >/dev/null 2>&1 || true
    fi
    "${PODMAN[@]}" pod rm -f "${TAG}-edge-pod-0" >/dev/null 2>&1 || true
    "${PODMAN[@]}" secret rm "${TAG}-edge-admin" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

echo "== render overlays/$OVERLAY"
kubectl kustomize "$HERE/overlays/$OVERLAY" >"$WORK/rendered.yaml" || fail "kubectl kustomize overlays/$OVERLAY"

echo "== throwaway TLS certificate and admin token"
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$WORK/tls/tls.key" -out "$WORK/tls/tls.crt" >/dev/null 2>&1 || fail "openssl"
chmod 755 "$WORK/tls"; chmod 644 "$WORK/tls/tls.crt" "$WORK/tls/tls.key"
TOKEN="$(openssl rand -hex 16)"

echo "== podman-compatible edge Deployment"
python3 - "$WORK" "$TAG" "$TOKEN" "$IMAGE" <<'PY' || fail "could not adapt the rendered Deployment"
import base64, copy, json, sys, yaml
work, tag, token, image = sys.argv[1:5]
docs = [d for d in yaml.safe_load_all(open(f"{work}/rendered.yaml")) if d]
find = lambda kind, name: next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
edge = find("Deployment", "edge")
origin = find("Deployment", "origin")
pod = edge["spec"]["template"]["spec"]
(cm_name,) = [e["configMapRef"]["name"] for c in pod["containers"] for e in c.get("envFrom", [])]
cm = copy.deepcopy(find("ConfigMap", cm_name))

def say(what): print("   -", what)

edge["metadata"]["name"] = f"{tag}-edge"
edge["metadata"].pop("namespace", None)
cm["metadata"].pop("namespace", None)
edge["spec"]["replicas"] = 1; say("replicas: 1")
cm["data"]["EDGE_UPSTREAM"] = "http://127.0.0.1:8000"
cm["data"]["EDGE_SHIELDS"] = ""
cm["data"]["EDGE_PURGE_PEERS"] = ""
say("EDGE_UPSTREAM=http://127.0.0.1:8000, EDGE_SHIELDS and EDGE_PURGE_PEERS emptied")
oc = copy.deepcopy(origin["spec"]["template"]["spec"]["containers"][0])
oc["command"] = [a if a != "0.0.0.0:8000" else "127.0.0.1:8000" for a in oc["command"]]
oc["volumeMounts"] = [{"name": "origin-tmp", "mountPath": "/tmp"}]
pod["containers"].append(oc)
pod["volumes"].append({"name": "origin-tmp", "emptyDir": {}})
say("origin container (from the rendered origin Deployment) added, on 127.0.0.1:8000")
for v in pod["volumes"]:
    if "secret" in v:
        say(f"Secret volume {v['secret']['secretName']} -> hostPath {work}/tls")
        v.clear(); v.update(name="tls", hostPath={"path": f"{work}/tls", "type": "Directory"})

def exec_probe(probe, port_of):
    get = probe.pop("httpGet")
    port = port_of.get(get["port"], get["port"])
    # podman 4.3 joins the words with spaces into one `sh -c` line: quote the program once.
    probe["exec"] = {"command": ["python3", "-c",
        f"\"import urllib.request as u; u.urlopen('http://127.0.0.1:{port}{get['path']}', timeout=2)\""]}
    return f"{get['path']} on {port}"

for c in pod["containers"]:
    if c["image"] != image:
        say(f"{c['name']} image {c['image']} -> {image} (EDGE_IMAGE)")
        c["image"] = image
    port_of = {p["name"]: p["containerPort"] for p in c.get("ports", []) if "name" in p}
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        if "httpGet" in c.get(kind, {}):
            say(f"{c['name']} {kind}: httpGet {exec_probe(c[kind], port_of)} -> exec python3")
    for e in c.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            ref["name"] = f"{tag}-{ref['name']}"
    c.pop("lifecycle", None)  # kube play ignores preStop; dropped so nothing pretends otherwise
yaml.safe_dump_all([cm, edge], open(f"{work}/play.yaml", "w"), sort_keys=False)
secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{tag}-edge-admin"},
          "data": {"EDGE_ADMIN_TOKEN": base64.b64encode(token.encode()).decode()}}
json.dump(secret["data"], open(f"{work}/secret.json", "w"))  # podman reads {key: base64} JSON
PY
"${PODMAN[@]}" secret create "${TAG}-edge-admin" "$WORK/secret.json" >/dev/null || fail "podman secret create"

echo "== podman kube play (runc, cgroupfs)"
"${PODMAN[@]}" kube play "$WORK/play.yaml" || fail "podman kube play"
POD="${TAG}-edge-pod-0"
EDGE_CTR="${POD}-edge"

IP="$("${PODMAN[@]}" pod inspect "$POD" --format '{{.InfraContainerID}}' | xargs "${PODMAN[@]}" inspect \
      --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}')"
[ -n "$IP" ] || fail "no pod IP for $POD"
echo "   pod $POD at $IP"

echo "== wait (at most ${WAIT}s) for /readyz on the admin port"
deadline=$((SECONDS + WAIT))
until curl -fsS -o /dev/null "http://$IP:9090/readyz" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        "${PODMAN[@]}" pod ps --filter "name=$POD"; "${PODMAN[@]}" ps -a --pod --filter "pod=$POD"
        for c in $("${PODMAN[@]}" ps -a --filter "pod=$POD" --format '{{.Names}}'); do
            echo "--- logs $c"; "${PODMAN[@]}" logs --tail 30 "$c" 2>&1
        done
        fail "edge not ready within ${WAIT}s"
    fi
    sleep 1
done
echo "   ready ${SECONDS}s after the script started"
until curl -fsS -o /dev/null "http://$IP:9090/healthz"; do [ "$SECONDS" -ge "$deadline" ] && fail "/healthz"; sleep 1; done

echo "== liveness probe as podman's health check"
if ! "${PODMAN[@]}" healthcheck run "$EDGE_CTR"; then
    "${PODMAN[@]}" inspect "$EDGE_CTR" --format '   config: {{json .Config.Healthcheck}}'
    "${PODMAN[@]}" inspect "$EDGE_CTR" --format '   state: {{json .State.Health}}' 2>/dev/null || true
    fail "podman healthcheck run $EDGE_CTR"
fi
echo "   healthy"

echo "== runs as non-root"
uid="$("${PODMAN[@]}" exec "$EDGE_CTR" python3 -c 'import os; print(os.getuid())')"
echo "   uid $uid"
[ "$uid" != "0" ] || fail "edge runs as root"

echo "== a MISS then a HIT through the edge"
status() { curl -sS -o /dev/null -D - "http://$IP:8080/robots.txt" | tr -d '\r' | grep -i -E '^(HTTP/|x-cache:|cache-status:|age:)'; }
first="$(status)"; echo "$first" | sed 's/^/   /'
second="$(status)"; echo "$second" | sed 's/^/   /'
echo "$first" | grep -qiE '^HTTP/[0-9.]+ 200' || fail "first request not 200"
echo "$first" | grep -qi '^x-cache: MISS' || fail "first request not a MISS"
echo "$second" | grep -qi '^x-cache: HIT' || fail "second request not a HIT"
echo "$second" | grep -qi "^cache-status: .*edge-$OVERLAY" || fail "Cache-Status does not name edge-$OVERLAY"

echo "== HTTPS on 8443 with the mounted certificate"
curl -sS -k -o /dev/null -w '   %{http_code} over HTTP/%{http_version}\n' "https://$IP:8443/robots.txt" \
    || fail "HTTPS on 8443"

echo "PASS: overlays/$OVERLAY edge Deployment played with podman: ready, healthy, MISS then HIT"
