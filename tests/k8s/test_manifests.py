"""docker/k8s, offline: every overlay renders, every rendered object passes
``kubernetes-validate --strict``, and the things the node depends on hold.

Rendering needs ``kubectl`` with kustomize v4 or later (``kubectl kustomize``); without it
these tests skip and say so. Neither PyPI nor Debian bookworm offers one that fits: PyPI's
``kustomize`` is an unrelated Python package, Debian's ``kubernetes-client`` is kubectl 1.20
with kustomize v2.0.3 (no ``labels``, no ``replicas`` field). ``kubernetes-validate`` (PyPI)
ships its schemas and runs offline.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate: pip install -e '.[test]'")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed: pip install -e '.[test]'"
)

K8S = Path(__file__).resolve().parents[2] / "docker" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())


def _versions() -> tuple[str, ...]:
    """1.29 (mixed-protocol LoadBalancer is GA in 1.26; 1.29 is the oldest minor still commonly
    supported), or the oldest schemas shipped if that is newer, and the newest shipped."""
    from kubernetes_validate.utils import all_versions

    shipped = sorted(all_versions(), key=lambda v: tuple(int(x) for x in v.split(".")))
    oldest = next((v for v in shipped if tuple(map(int, v.split(".")[:2])) >= (1, 29)), shipped[-1])
    return tuple(dict.fromkeys((oldest, shipped[-1])))


K8S_VERSIONS = _versions()
ADMIN_PORT = 9090


def _kubectl_problem() -> str | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return "kubectl is not installed: `kubectl kustomize` renders the overlays (no cluster needed)"
    try:
        out = subprocess.run(
            [kubectl, "version", "--client", "-o", "json"], capture_output=True, text=True, timeout=30
        ).stdout
        version = json.loads(out).get("kustomizeVersion", "")
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return f"kubectl version --client failed: {exc}"
    m = re.match(r"v?(\d+)\.", version)
    if not m or int(m.group(1)) < 4:
        return f"kubectl embeds kustomize {version or 'unknown'}; the overlays need v4 or later"
    return None


KUBECTL_PROBLEM = _kubectl_problem()
needs_kubectl = pytest.mark.skipif(KUBECTL_PROBLEM is not None, reason=str(KUBECTL_PROBLEM))

_rendered: dict[str, str] = {}


def render(overlay: str) -> str:
    if overlay not in _rendered:
        proc = subprocess.run(
            ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, f"kubectl kustomize overlays/{overlay}: {proc.stderr}"
        _rendered[overlay] = proc.stdout
    return _rendered[overlay]


def objects(overlay: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(render(overlay)) if d]


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def edge_env(objs: list[dict[str, Any]]) -> dict[str, str]:
    """The edge container's environment as the pod sees it: ConfigMaps, then literal values."""
    (container,) = one(objs, "Deployment", "edge")["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(one(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def workloads(objs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] in ("Deployment", "StatefulSet")]


pytestmark = [needs_kubectl, pytest.mark.timeout(300)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_the_whole_region(overlay: str) -> None:
    kinds = sorted(f"{o['kind']}/{o['metadata']['name'].split('-')[0]}" for o in objects(overlay))
    for expected in (
        "Deployment/edge", "Service/edge", "HorizontalPodAutoscaler/edge", "PodDisruptionBudget/edge",
        "ConfigMap/edge", "StatefulSet/shield", "Service/shield", "Deployment/origin", "Service/origin",
    ):  # fmt: skip
        assert expected in kinds, f"overlays/{overlay} renders no {expected}: {kinds}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_passes_kubernetes_validate_strict(
    overlay: str, version: str, tmp_path: Path
) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(render(overlay))
    proc = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "-k", version, str(rendered)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    passed = re.findall(r"passed for resource (\S+)", output)
    assert len(passed) == len(objects(overlay)), output


def test_strict_validation_rejects_an_unknown_field(tmp_path: Path) -> None:
    """The control for the test above: --strict is what makes a misspelt field fail."""
    objs = objects(OVERLAYS[0])
    deployment = one(objs, "Deployment", "edge")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"port": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(deployment))
    proc = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "httpGett" in proc.stdout + proc.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_probes_hit_the_admin_port(overlay: str) -> None:
    objs = objects(overlay)
    (container,) = one(objs, "Deployment", "edge")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        assert ports.get(get["port"], get["port"]) == ADMIN_PORT, f"{probe} is not on the admin port"
    assert edge_env(objs)["EDGE_ADMIN_LISTEN"].endswith(f":{ADMIN_PORT}")
    assert not edge_env(objs)["EDGE_ADMIN_LISTEN"].startswith("127."), "the kubelet cannot reach loopback"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_service_has_tcp_8080_tcp_8443_and_udp_8443(overlay: str) -> None:
    objs = objects(overlay)
    service = one(objs, "Service", "edge")
    ports = {(p["port"], p.get("protocol", "TCP")) for p in service["spec"]["ports"]}
    assert {(8080, "TCP"), (8443, "TCP"), (8443, "UDP")} <= ports
    assert ADMIN_PORT not in {p["port"] for p in service["spec"]["ports"]}, "admin API on the public Service"
    env = edge_env(objs)
    assert env["EDGE_LISTEN"] == "0.0.0.0:8080"
    assert env["EDGE_TLS_LISTEN"] == env["EDGE_QUIC_LISTEN"] == "0.0.0.0:8443"
    (container,) = one(objs, "Deployment", "edge")["spec"]["template"]["spec"]["containers"]
    assert {(p["containerPort"], p["protocol"]) for p in container["ports"]} >= ports


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_hpa_scales_the_edge_on_cpu(overlay: str) -> None:
    objs = objects(overlay)
    hpa = one(objs, "HorizontalPodAutoscaler", "edge")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "edge"}
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert hpa["spec"]["minReplicas"] == one(objs, "Deployment", "edge")["spec"]["replicas"] >= 2
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    (container,) = one(objs, "Deployment", "edge")["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"], "CPU utilisation needs a CPU request"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pdbs_select_edges_and_shields(overlay: str) -> None:
    objs = objects(overlay)
    for name in ("edge", "shield"):
        pdb = one(objs, "PodDisruptionBudget", name)
        labels = one(objs, "Deployment" if name == "edge" else "StatefulSet", name)["spec"]["template"][
            "metadata"
        ]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pdb["spec"].get("maxUnavailable") == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edges_and_shields_spread_across_zones_of_their_region(overlay: str) -> None:
    objs = objects(overlay)
    for workload in (one(objs, "Deployment", "edge"), one(objs, "StatefulSet", "shield")):
        spec = workload["spec"]["template"]["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        by_key = {c["topologyKey"]: c for c in spec["topologySpreadConstraints"]}
        zone = by_key["topology.kubernetes.io/zone"]
        assert zone["maxSkew"] == 1 and zone["labelSelector"]["matchLabels"].items() <= labels.items()
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        keys = {e["key"]: e["values"] for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]}
        assert len(keys["topology.kubernetes.io/zone"]) >= 2, "spreading needs zones to spread over"
        assert all(
            z.startswith(keys["topology.kubernetes.io/region"][0])
            for z in keys["topology.kubernetes.io/zone"]
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_runs_as_non_root_with_a_read_only_root(overlay: str) -> None:
    for workload in workloads(objects(overlay)):
        spec = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"] and c["resources"]["limits"], name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edge_secrets_token_and_tls_from_secrets_never_from_the_configmap(overlay: str) -> None:
    objs = objects(overlay)
    deployment = one(objs, "Deployment", "edge")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = edge_env(objs)
    assert "EDGE_ADMIN_TOKEN" not in env
    assert not [o for o in objs if o["kind"] == "Secret"], "secrets are created out of band, never rendered"
    token = next(e for e in container["env"] if e["name"] == "EDGE_ADMIN_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "edge-admin", "key": "EDGE_ADMIN_TOKEN"}
    (tls,) = [v for v in spec["volumes"] if "secret" in v]
    assert tls["secret"]["secretName"] == "edge-tls"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == tls["name"]]
    assert mount["readOnly"] is True
    assert env["EDGE_CERT"] == f"{mount['mountPath']}/tls.crt"  # the keys of a kubernetes.io/tls Secret
    assert env["EDGE_KEY"] == f"{mount['mountPath']}/tls.key"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_termination_grace_outlasts_the_drain(overlay: str) -> None:
    objs = objects(overlay)
    spec = one(objs, "Deployment", "edge")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    pause = float(re.search(r"sleep\((\d+(?:\.\d+)?)\)", pre_stop[-1]).group(1))
    drain = float(edge_env(objs)["EDGE_SHUTDOWN_GRACE"])
    assert spec["terminationGracePeriodSeconds"] > pause + drain


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_edges_list_every_shield_by_its_headless_dns_name(overlay: str) -> None:
    objs = objects(overlay)
    shield = one(objs, "StatefulSet", "shield")
    service = one(objs, "Service", shield["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None", "rendezvous hashing needs one stable URL per shield"
    assert service["spec"]["selector"].items() <= shield["spec"]["template"]["metadata"]["labels"].items()
    svc_ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    names = [
        f"{shield['metadata']['name']}-{i}.{service['metadata']['name']}"
        for i in range(shield["spec"]["replicas"])
    ]
    env = edge_env(objs)
    assert env["EDGE_SHIELDS"].split(",") == [f"http://{n}:{svc_ports['http']}" for n in names]
    assert env["EDGE_PURGE_PEERS"].split(",") == [f"http://{n}:{svc_ports['admin']}" for n in names]
    # the node accepts them as it would on the command line
    from edge.config import load

    config = load(env={**env, "EDGE_CERT": "", "EDGE_KEY": ""})
    assert config.name == f"edge-{overlay}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_upstream_is_the_origin_service(overlay: str) -> None:
    objs = objects(overlay)
    origin = one(objs, "Service", "origin")
    upstream = edge_env(objs)["EDGE_UPSTREAM"]
    assert upstream == f"http://origin:{origin['spec']['ports'][0]['port']}"
    shield_cm = one(objs, "StatefulSet", "shield")["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]
    assert one(objs, "ConfigMap", shield_cm["configMapRef"]["name"])["data"]["EDGE_UPSTREAM"] == upstream


def test_every_overlay_has_its_own_region_name_and_namespace() -> None:
    names = [edge_env(objects(o))["EDGE_NAME"] for o in OVERLAYS]
    assert names == [f"edge-{o}" for o in OVERLAYS]
    assert len(set(names)) == len(OVERLAYS) >= 3
    namespaces = [
        {o["metadata"].get("namespace") for o in objects(ov) if o["kind"] != "Namespace"} for ov in OVERLAYS
    ]
    assert namespaces == [{f"edge-{o}"} for o in OVERLAYS]


def test_every_edge_variable_is_a_setting_of_the_node() -> None:
    from edge.config import settings

    known = {"EDGE_" + f.name.upper() for f in settings()}
    for overlay in OVERLAYS:
        objs = objects(overlay)
        for workload in workloads(objs):
            for c in workload["spec"]["template"]["spec"]["containers"]:
                names = {e["name"] for e in c.get("env", [])}
                for source in c.get("envFrom", []):
                    names |= set(one(objs, "ConfigMap", source["configMapRef"]["name"])["data"])
                unknown = {n for n in names if n.startswith("EDGE_")} - known
                assert not unknown, f"{overlay} {workload['metadata']['name']}: {unknown}"
