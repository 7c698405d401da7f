"""Deployment artefacts: the Helm chart, the Dockerfile and the Argo CD example.

`scripts/helm-check.sh` lints the chart, renders it with three sets of values and
validates the manifests against the Kubernetes schemas; the tests below then read
what it rendered. The Dockerfile cannot be built here (no Docker engine), so it is
checked statically.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from graphgate.config import Settings, load_settings
from tests.services._common import service_unavailable

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "helm-check.sh"
CHART = ROOT / "deploy" / "helm" / "graphgate"
EXAMPLE_VALUES = CHART / "values-keycloak-memgraph.yaml"
ARGO_APP = ROOT / "deploy" / "argocd" / "application.yaml"
DOCKERFILE = ROOT / "Dockerfile"
CHECK_TIMEOUT = 1200  # a cold helm build from its Go module: 5-8 min on 2 busy cores
RENDERS = ("default", "keycloak-memgraph", "full", "catalog")
SECRET_SETTINGS = {"backend_password", "metrics_token", "static_client_secret"}

Manifest = dict[str, Any]


# --- running the check ---------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    have_helm = any((ROOT / ".cache" / "bin").glob("helm-v*"))
    if shutil.which("go") is None and not have_helm:
        service_unavailable("go is not installed: cannot build helm for the chart checks")
    out = tmp_path_factory.mktemp("helm-check")
    env = {**os.environ, "HELM_CHECK_OUT": str(out), "PYTHON": sys.executable}
    try:
        proc = subprocess.run(
            ["bash", str(SCRIPT)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/helm-check.sh did not finish in {CHECK_TIMEOUT} s: {exc.stdout!r}")
    report = f"stdout:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr[-6000:]}"
    assert proc.returncode == 0, f"scripts/helm-check.sh failed ({proc.returncode})\n{report}"
    assert "helm-check passed" in proc.stdout, report
    docs: dict[str, list[Manifest]] = {}
    for name in RENDERS:
        path = out / f"{name}.yaml"
        assert path.is_file(), f"{path} was not rendered\n{report}"
        docs[name] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        notes = (out / f"{name}.NOTES.txt").read_text()
        docs[name].append({"kind": "NOTES", "metadata": {"name": name}, "text": notes})
    return docs


def find(docs: list[Manifest], kind: str, name: str | None = None) -> list[Manifest]:
    return [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or doc["metadata"]["name"] == name)
    ]


def one(docs: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def server(docs: list[Manifest]) -> Manifest:
    return one(docs, "Deployment", "graphgate")


def container(docs: list[Manifest]) -> Manifest:
    containers = server(docs)["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["graphgate"]
    return containers[0]


def settings_env(docs: list[Manifest]) -> dict[str, str]:
    return one(docs, "ConfigMap", "graphgate")["data"]


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
def test_helm_check_passes(rendered: dict[str, list[Manifest]]) -> None:
    """Lint, render, refusals and schema validation all passed (see the fixture)."""
    assert set(rendered) == set(RENDERS)


# --- the rendered chart --------------------------------------------------------------


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
@pytest.mark.parametrize("name", RENDERS)
def test_probes_on_health_and_readiness(rendered: dict[str, list[Manifest]], name: str) -> None:
    c = container(rendered[name])
    assert c["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe, path in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ]:
        http = c[probe]["httpGet"]
        assert http["path"] == path, probe
        assert http["port"] == "http", probe
        # A name graphgate knows; the pod IP (the kubelet's default) would do as well.
        assert {"name": "Host", "value": "localhost"} in http["httpHeaders"], probe


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
@pytest.mark.parametrize("name", RENDERS)
def test_runs_as_non_root_on_a_read_only_root(
    rendered: dict[str, list[Manifest]], name: str
) -> None:
    pod = server(rendered[name])["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["automountServiceAccountToken"] is False
    sc = container(rendered[name])["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container(rendered[name])["volumeMounts"]}
    # The catalog's ConfigMap is mounted read-only beside the two writable scratch volumes.
    assert set(mounts) - {"/etc/graphgate"} == {"/tmp", "/data"}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "emptyDir" in volumes[mounts["/data"]]
    assert container(rendered[name])["resources"]["requests"]


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
def test_replicas_and_shared_state(rendered: dict[str, list[Manifest]]) -> None:
    default, example = rendered["default"], rendered["keycloak-memgraph"]
    assert server(default)["spec"]["replicas"] == 2
    assert settings_env(default)["GRAPHGATE_STATELESS_HTTP"] == "true"
    assert "GRAPHGATE_STATE_URL" not in settings_env(default)
    assert not [d for d in default if "redis" in d["metadata"]["name"]]
    assert one(default, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1

    assert server(example)["spec"]["replicas"] == 3
    env = settings_env(example)
    assert env["GRAPHGATE_STATELESS_HTTP"] == "true"
    assert env["GRAPHGATE_STATE_URL"] == "redis://graphgate-redis:6379/0"
    redis_service = one(example, "Service", "graphgate-redis")
    assert redis_service["spec"]["ports"][0]["port"] == 6379
    redis = one(example, "Deployment", "graphgate-redis")
    assert redis_service["spec"]["selector"] == redis["spec"]["selector"]["matchLabels"]
    assert redis["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    # The graphgate Service must not select the Redis pod, nor the other way round.
    graphgate_selector = one(example, "Service", "graphgate")["spec"]["selector"]
    assert graphgate_selector == server(example)["spec"]["selector"]["matchLabels"]
    assert graphgate_selector != redis_service["spec"]["selector"]
    policy = one(example, "NetworkPolicy", "graphgate-redis")
    assert policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == (
        graphgate_selector
    )


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
def test_keycloak_memgraph_example(rendered: dict[str, list[Manifest]]) -> None:
    env = settings_env(rendered["keycloak-memgraph"])
    assert env["GRAPHGATE_AUTH"] == "oidc"
    assert env["GRAPHGATE_ISSUER"] == "https://keycloak.example.com/realms/graphgate"
    assert env["GRAPHGATE_REGISTRATION"] == "shim"
    assert env["GRAPHGATE_STATIC_CLIENT_ID"] == "graphgate-shim"
    assert env["GRAPHGATE_BACKEND"] == "bolt://memgraph:7687"
    assert env["GRAPHGATE_BACKEND_DIALECT"] == "memgraph"
    assert env["GRAPHGATE_TENANTS"] == "acme,globex"
    assert env["GRAPHGATE_PUBLIC_URL"] == "https://graphgate.example.com"
    assert env["GRAPHGATE_HOST"] == "0.0.0.0"
    ingress = one(rendered["keycloak-memgraph"], "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "graphgate.example.com"


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
def test_secrets_come_from_secrets(rendered: dict[str, list[Manifest]]) -> None:
    # An existing Secret: referenced, optional keys, nothing created.
    example = rendered["keycloak-memgraph"]
    assert not find(example, "Secret")
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container(example)["env"]
        if "valueFrom" in e
    }
    assert refs == {
        "GRAPHGATE_BACKEND_PASSWORD": {
            "name": "graphgate-secrets",
            "key": "backend-password",
            "optional": True,
        },
        "GRAPHGATE_METRICS_TOKEN": {
            "name": "graphgate-secrets",
            "key": "metrics-token",
            "optional": True,
        },
        "GRAPHGATE_STATIC_CLIENT_SECRET": {
            "name": "graphgate-secrets",
            "key": "static-client-secret",
            "optional": True,
        },
    }

    # Values given to the chart: a Secret it creates, and references to it.
    full = rendered["full"]
    secret = one(full, "Secret", "graphgate")
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "backend-password": "ci-backend-password",
        "metrics-token": "ci-metrics-token",
        "static-client-secret": "ci-client-secret",
    }
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container(full)["env"]
        if "valueFrom" in e
    }
    assert {r["name"] for r in refs.values()} == {"graphgate"}
    assert len(refs) == 3
    monitor = one(full, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["authorization"]["credentials"] == {
        "name": "graphgate",
        "key": "metrics-token",
    }

    # With the defaults (auth = oidc, no token given) the chart makes up the metrics
    # token graphgate requires, and wires nothing else.
    generated = one(rendered["default"], "Secret", "graphgate")
    assert set(generated["data"]) == {"metrics-token"}
    assert len(base64.b64decode(generated["data"]["metrics-token"])) == 48
    default_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container(rendered["default"]).get("env") or []
        if "valueFrom" in e
    }
    assert default_refs == {
        "GRAPHGATE_METRICS_TOKEN": {"name": "graphgate", "key": "metrics-token"}
    }

    # No secrets anywhere but in the Secret.
    for name in RENDERS:
        for doc in rendered[name]:
            if doc["kind"] == "Secret":
                continue
            text = json.dumps(doc)
            for value in decoded.values():
                assert value not in text, f"{value} in {doc['kind']} {doc['metadata']['name']}"
        env = settings_env(rendered[name])
        assert not {f"GRAPHGATE_{s.upper()}" for s in SECRET_SETTINGS} & set(env)


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
def test_setting_values_are_rendered_as_graphgate_reads_them(
    rendered: dict[str, list[Manifest]],
) -> None:
    full = rendered["full"]
    env = settings_env(full)
    assert all(isinstance(v, str) for v in env.values())
    assert json.loads(env["GRAPHGATE_TENANTS"]) == {"acme": "acme_prod", "globex": "globex_prod"}
    assert env["GRAPHGATE_MAX_RESULT_BYTES"] == "8388608"  # not 8.388608e+06
    assert env["GRAPHGATE_QUERY_TIMEOUT"] == "12.5"
    assert env["GRAPHGATE_ALLOW_WRITES"] == "true"
    assert env["GRAPHGATE_REDIRECT_URI_ALLOWLIST"] == "http://127.0.0.1/*,http://localhost/*"
    assert "GRAPHGATE_AUDIENCE" not in env and "GRAPHGATE_JWKS_URL" not in env
    assert container(full)["image"].endswith("@sha256:" + "0" * 64)
    assert one(full, "Ingress")["spec"]["rules"][0]["host"] == "mcp.example.org"
    pdb = one(full, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 1 and "maxUnavailable" not in pdb
    annotations = server(full)["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/config", "checksum/secret"} <= set(annotations)


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
@pytest.mark.parametrize("name", RENDERS)
def test_graphgate_accepts_the_rendered_settings(
    rendered: dict[str, list[Manifest]],
    name: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """The ConfigMap, plus the secrets, passes graphgate's own validation."""
    for key in list(os.environ):
        if key.startswith("GRAPHGATE_"):
            monkeypatch.delenv(key)
    for key, value in settings_env(rendered[name]).items():
        monkeypatch.setenv(key, value)
    for entry in container(rendered[name]).get("env") or []:
        if entry["name"].startswith("GRAPHGATE_"):
            monkeypatch.setenv(entry["name"], "from-a-secret")
    file = None
    if name == "catalog":  # served with --config, the mounted catalog
        file = tmp_path / "graphgate.toml"
        file.write_text(
            one(rendered[name], "ConfigMap", "graphgate-catalog")["data"]["graphgate.toml"]
        )
    settings = load_settings(file)
    assert settings.host == "0.0.0.0"
    assert settings.port == 8000
    assert str(settings.data_dir) == "/data"
    assert settings.auth in {"oidc", "dev"}
    assert settings.tenants or name == "catalog"


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
def test_the_catalog_is_a_mounted_configmap_that_changes_without_a_rollout(
    rendered: dict[str, list[Manifest]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = rendered["catalog"]
    configmap = one(docs, "ConfigMap", "graphgate-catalog")
    pod = server(docs)["spec"]["template"]
    main = container(docs)
    assert main["args"] == ["serve", "--config", "/etc/graphgate/graphgate.toml"]
    mount = next(m for m in main["volumeMounts"] if m["name"] == "catalog")
    # A directory mount: kubelet swaps it in place. A subPath mount would never change.
    assert mount["mountPath"] == "/etc/graphgate" and "subPath" not in mount
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == "catalog")
    assert volume["configMap"]["name"] == "graphgate-catalog"
    annotations = pod["metadata"]["annotations"]
    # No checksum of the catalog: a change reaches running pods without a new rollout.
    rendered_catalog = configmap["data"]["graphgate.toml"]
    assert not any(rendered_catalog[:40] in str(value) for value in annotations.values())
    assert "GRAPHGATE_TENANTS" not in settings_env(docs)
    # graphgate reads the mounted file with the ConfigMap's environment as it would start.
    for key in list(os.environ):
        if key.startswith("GRAPHGATE_"):
            monkeypatch.delenv(key)
    for key, value in settings_env(docs).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GRAPHGATE_BACKENDS__EU__PASSWORD", "from-a-secret")
    monkeypatch.setenv("GRAPHGATE_METRICS_TOKEN", "from-a-secret")
    file = tmp_path / "graphgate.toml"
    file.write_text(rendered_catalog)
    settings = load_settings(file)
    where = {name: (p.backend, p.database) for name, p in settings.placements.items()}
    assert where == {
        "acme": ("default", "acme"),
        "globex": ("eu", "globex_prod"),
        "initech": ("team-x", "memgraph"),
    }
    assert settings.backend_targets["eu"].secret == "from-a-secret"
    assert settings.backend_targets["team-x"].discover


@pytest.mark.timeout(CHECK_TIMEOUT + 60)
def test_notes(rendered: dict[str, list[Manifest]]) -> None:
    default = one(rendered["default"], "NOTES")["text"]
    assert "MCP endpoint for clients: https://graphgate.example.com/mcp" in default
    assert "WARNING: 2 replicas keep their state in memory" in default
    example = one(rendered["keycloak-memgraph"], "NOTES")["text"]
    assert "state_url=redis://graphgate-redis:6379/0" in example
    assert "WARNING" not in example


# --- static checks (no helm needed) --------------------------------------------------


@pytest.mark.parametrize(
    "values", [CHART / "values.yaml", EXAMPLE_VALUES, CHART / "ci" / "full-values.yaml"]
)
def test_config_keys_are_graphgate_settings(values: Path) -> None:
    config = yaml.safe_load(values.read_text()).get("config") or {}
    unknown = set(config) - set(Settings.model_fields)
    assert not unknown, f"{values.name}: not graphgate settings: {sorted(unknown)}"
    assert not SECRET_SETTINGS & set(config)


def test_argocd_application() -> None:
    app = yaml.safe_load(ARGO_APP.read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1"
    assert app["kind"] == "Application"
    source = app["spec"]["source"]
    assert source["repoURL"] == "https://git.example.com/platform/graphgate.git"
    assert (ROOT / source["path"]).resolve() == CHART
    for values_file in source["helm"]["valuesFiles"]:
        assert (CHART / values_file).is_file(), values_file
    sync = app["spec"]["syncPolicy"]
    assert sync["automated"]["prune"] is True and sync["automated"]["selfHeal"] is True
    assert "CreateNamespace=true" in sync["syncOptions"]
    assert app["spec"]["destination"]["namespace"]


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_dockerfile() -> None:
    instructions = _dockerfile_instructions()
    by_kind: dict[str, list[str]] = {}
    for keyword, rest in instructions:
        by_kind.setdefault(keyword, []).append(rest)

    stages = by_kind["FROM"]
    assert len(stages) == 2, "a build stage and a runtime stage"
    assert "PYTHON_IMAGE=python:3.11-slim" in by_kind["ARG"]
    assert all(stage.startswith("${PYTHON_IMAGE}") for stage in stages)
    assert any("pip install -c constraints.txt ." in run for run in by_kind["RUN"])
    assert by_kind["USER"] == ["10001:10001"]
    assert by_kind["EXPOSE"] == ["8000"]
    assert by_kind["VOLUME"] == ['["/data"]']
    assert json.loads(by_kind["ENTRYPOINT"][0]) == ["graphgate", "serve"]
    env = " ".join(by_kind["ENV"])
    assert "GRAPHGATE_HOST=0.0.0.0" in env
    for name in re.findall(r"GRAPHGATE_([A-Z_]+)=", env):
        assert name.lower() in Settings.model_fields, name

    # The health check is valid Python against /healthz (slim images have no curl).
    (healthcheck,) = by_kind["HEALTHCHECK"]
    exec_form = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert exec_form[:2] == ["python", "-c"]
    compile(exec_form[2], "<healthcheck>", "exec")
    assert "/healthz" in exec_form[2]

    # Every COPY source from the build context exists and is not excluded.
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*", ".dockerignore is an allow-list"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for copy in by_kind["COPY"]:
        parts = shlex.split(copy)
        if any(p.startswith("--from=") for p in parts):
            continue
        for source in parts[:-1]:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, f"{source} is not in the .dockerignore allow-list"
