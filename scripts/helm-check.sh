#!/usr/bin/env bash
# Lint, render and validate the Helm chart deploy/helm/graphgate, offline.
#
#   scripts/helm-check.sh
#
# 1. Builds helm from its Go module into .cache/bin (once; a cold build takes a few
#    minutes, later runs reuse the binary).
# 2. `helm lint --strict` and `helm template` the chart with its default values, the
#    Keycloak + Memgraph example and the CI values (every optional part on); the
#    rendered manifests go to .cache/helm-check/<name>.yaml (or $HELM_CHECK_OUT).
# 3. Checks that values graphgate would refuse are refused at render time.
# 4. Validates the rendered manifests against the Kubernetes JSON schemas bundled
#    with kubernetes-validate (strict: unknown fields are errors), for each version
#    in $KUBE_VERSIONS. Only the Prometheus Operator's ServiceMonitor (a CRD) has
#    no bundled schema.
#
# Needs: go (the Go module proxy), the project's .venv (or $PYTHON) with
# kubernetes-validate, installed here from PyPI when missing.
# Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# The Kubernetes minor the helm build assumes by default (its client-go is v0.37).
HELM_K8S_MAJOR=1
HELM_K8S_MINOR=37
KUBERNETES_VALIDATE_VERSION="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"
KUBE_VERSIONS="${KUBE_VERSIONS:-1.31.0 1.37.0}"
CHART="$ROOT/deploy/helm/graphgate"
OUT="${HELM_CHECK_OUT:-$ROOT/.cache/helm-check}"
BIN_DIR="$ROOT/.cache/bin"
HELM="$BIN_DIR/helm-$HELM_VERSION"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
RELEASE=graphgate
NAMESPACE=graphgate

# helm keeps its cache, config and data in the work tree: nothing from $HOME is read.
export HELM_CACHE_HOME="$ROOT/.cache/helm/cache"
export HELM_CONFIG_HOME="$ROOT/.cache/helm/config"
export HELM_DATA_HOME="$ROOT/.cache/helm/data"

started=$SECONDS
step() { printf '==> %s\n' "$*"; }
die() { printf 'helm-check: FAILED: %s\n' "$*" >&2; exit 1; }

# --- 1. helm ---------------------------------------------------------------------------
if [[ ! -x "$HELM" ]]; then
    command -v go > /dev/null || die "go is not installed (needed to build helm $HELM_VERSION)"
    step "building helm $HELM_VERSION from its Go module (first run only)"
    build_started=$SECONDS
    mkdir -p "$BIN_DIR"
    tmp_bin="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
    trap 'rm -rf "$tmp_bin"' EXIT
    ldflags="-s -w"
    ldflags+=" -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
    ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
    for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        ldflags+=" -X $pkg.k8sVersionMajor=$HELM_K8S_MAJOR -X $pkg.k8sVersionMinor=$HELM_K8S_MINOR"
    done
    GOBIN="$tmp_bin" GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0 \
        go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" \
        || die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed"
    mv -f "$tmp_bin/helm" "$HELM"
    rm -rf "$tmp_bin"
    trap - EXIT
    step "built helm in $((SECONDS - build_started)) s"
fi
"$HELM" version --short | grep -qx "$HELM_VERSION.*" || die "$HELM does not report $HELM_VERSION"
step "helm $("$HELM" version --short)"

# --- kubernetes-validate -------------------------------------------------------------
[[ -x "$PYTHON" ]] || die "no Python at $PYTHON (run 'make test' or set PYTHON)"
installed="$("$PYTHON" -c 'from kubernetes_validate.version import __version__; print(__version__)' 2> /dev/null || true)"
if [[ "$installed" != "$KUBERNETES_VALIDATE_VERSION" ]]; then
    step "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
    "$PYTHON" -m pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" \
        || die "pip install kubernetes-validate==$KUBERNETES_VALIDATE_VERSION failed"
fi
step "kubernetes-validate $KUBERNETES_VALIDATE_VERSION, Kubernetes schemas ${KUBE_VERSIONS// /, }"

# --- 2. lint and render ----------------------------------------------------------------
mkdir -p "$OUT"
rm -f "$OUT"/*.yaml "$OUT"/*.NOTES.txt
declare -A VALUES=(
    [default]=""
    [keycloak-memgraph]="$CHART/values-keycloak-memgraph.yaml"
    [full]="$CHART/ci/full-values.yaml"
    [catalog]="$CHART/ci/catalog-values.yaml"
)
for name in default keycloak-memgraph full catalog; do
    args=()
    [[ -n "${VALUES[$name]}" ]] && args=(--values "${VALUES[$name]}")
    step "helm lint ($name values)"
    "$HELM" lint --strict "$CHART" "${args[@]}" --namespace "$NAMESPACE" \
        || die "helm lint with $name values"
    step "helm template ($name values) > $OUT/$name.yaml"
    "$HELM" template "$RELEASE" "$CHART" "${args[@]}" --namespace "$NAMESPACE" \
        > "$OUT/$name.yaml" || die "helm template with $name values"
done

# NOTES.txt is not part of `helm template` output: render it through a copy of the
# chart in which a ConfigMap carries it.
notes_chart="$OUT/notes-chart"
rm -rf "$notes_chart"
cp -R "$CHART" "$notes_chart"
mv "$notes_chart/templates/NOTES.txt" "$notes_chart/notes-check.txt"
cat > "$notes_chart/templates/notes-check.yaml" << 'EOF_NOTES'
apiVersion: v1
kind: ConfigMap
metadata:
  name: notes-check
data:
  notes: {{ tpl (.Files.Get "notes-check.txt") . | toJson }}
EOF_NOTES
for name in default keycloak-memgraph full catalog; do
    args=()
    [[ -n "${VALUES[$name]}" ]] && args=(--values "${VALUES[$name]}")
    step "NOTES.txt ($name values) > $OUT/$name.NOTES.txt"
    "$HELM" template "$RELEASE" "$notes_chart" "${args[@]}" --namespace "$NAMESPACE" \
        --show-only templates/notes-check.yaml 2> /dev/null \
        | "$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(sys.stdin)["data"]["notes"])' \
            > "$OUT/$name.NOTES.txt" || die "NOTES.txt does not render with $name values"
    grep -q "MCP endpoint for clients: https://" "$OUT/$name.NOTES.txt" \
        || die "NOTES.txt with $name values lacks the endpoint"
done
rm -rf "$notes_chart"

# --- 3. values that must be refused ----------------------------------------------------
refused() {
    local expect="$1"
    shift
    local output
    if output="$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" 2>&1)"; then
        die "helm template $* rendered, but should have refused it ($expect)"
    fi
    grep -qF -- "$expect" <<< "$output" || die "helm template $* failed without '$expect': $output"
    printf '    refused as expected: %s\n' "$*"
}
step "values graphgate would refuse"
refused "config.auth" --set config.auth=none
refused "config.public_url" --set config.public_url=
refused "config.issuer" --set config.issuer=
refused "config.tenants" --set config.tenants=null
refused "config.backend_password: a secret" --set config.backend_password=hunter2
refused "config.metrics_token: a secret" --set config.metrics_token=hunter2
refused "config.host: set by the chart" --set config.host=127.0.0.1
refused "config.backend: the embedded database" --set config.backend=embedded
refused "config.static_client_id" --set config.registration=shim
refused "config.state_url" --set redis.enabled=true --set config.state_url=redis://other:6379/0
"$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
    --set replicaCount=1 --set config.backend=embedded > /dev/null \
    || die "one replica on the embedded database should render"
# graphgate refuses auth = oidc without a metrics token unless metrics_public: the
# chart generates one, except when told /metrics is public.
public="$("$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" \
    --set config.metrics_public=true)" || die "config.metrics_public=true should render"
grep -q "GRAPHGATE_METRICS_TOKEN" <<< "$public" \
    && die "config.metrics_public=true should render no metrics token"
grep -q "^kind: Secret" <<< "$public" && die "config.metrics_public=true should render no Secret"

# --- 4. schemas ------------------------------------------------------------------------
validate_args=(--strict --quiet)
for version in $KUBE_VERSIONS; do
    validate_args+=(-k "$version")
done
failed=0
for file in "$OUT"/*.yaml; do
    step "kubernetes-validate ${validate_args[*]} $(basename "$file")"
    set +e
    report="$("$PYTHON" -m kubernetes_validate "${validate_args[@]}" "$file" 2>&1)"
    rc=$?
    set -e
    [[ -n "$report" ]] && printf '%s\n' "$report" | sed 's/^/    /'
    # A kind without a bundled schema is only a warning to kubernetes-validate; here it
    # is an error, except for the ServiceMonitor CRD.
    unexpected="$(grep -E '^(ERROR|FATAL|WARN)' <<< "$report" | grep -vE "^WARN .*kind ServiceMonitor with api version monitoring.coreos.com/v1 " || true)"
    if [[ $rc -ne 0 || -n "$unexpected" ]]; then
        failed=1
    fi
    count="$("$PYTHON" -c 'import sys, yaml; print(sum(1 for d in yaml.safe_load_all(open(sys.argv[1])) if d))' "$file")"
    [[ "$count" -gt 0 ]] || { printf '    no manifests rendered\n'; failed=1; }
    printf '    %s manifests\n' "$count"
done
[[ $failed -eq 0 ]] || die "rendered manifests do not validate"

step "helm-check passed in $((SECONDS - started)) s"
