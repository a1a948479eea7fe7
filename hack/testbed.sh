#!/usr/bin/env bash
# Installs or builds, pinned, everything the test bed runs: Kubernetes control-plane binaries and
# etcd from Go modules, helm, the S3 server, and ffmpeg/nginx-rtmp/prometheus from Debian.
# Builds are cached outside the repo, keyed by version, so a warm run does nothing.
#
#   hack/testbed.sh            install/build everything, print the bin directory
#   hack/testbed.sh --print    print the bin directory only (nothing is built)
#
# The bin directory (exported by the Makefile as ROOMREC_TESTBED_BIN) holds:
#   kube-apiserver kube-controller-manager kubectl etcd helm versitygw mediamtx node-media-server
# and its sibling monitoring-crds/ the prometheus-operator CRDs the chart's monitoring uses.
set -euo pipefail

KUBERNETES_VERSION=v1.37.2   # newest release k8s-openapi 0.29 supports (feature v1_37)
ETCD_VERSION=v3.7.3          # the etcd minor k8s v1.37 requires (go.mod: go.etcd.io/etcd/* v3.7)
HELM_VERSION=v3.22.0
VERSITYGW_VERSION=v1.8.0
PROMETHEUS_OPERATOR_VERSION=v0.85.0   # its CRDs: the chart's ServiceMonitor, PodMonitor, PrometheusRule
MEDIAMTX_VERSION=v1.12.3               # the RTSP and SRT server of the worker's protocol tests
NODE_MEDIA_SERVER_VERSION=4.4.3        # the HTTP-FLV server (npm registry; runs on the machine's Node.js)
DEBIAN_PACKAGES=(ffmpeg nginx-light libnginx-mod-rtmp prometheus openssl util-linux iproute2 nftables)

CACHE=${ROOMREC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/roomrec}
KEY="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_versitygw-${VERSITYGW_VERSION}"
BIN="$CACHE/testbed/$KEY/bin"

if [[ "${1:-}" == "--print" ]]; then echo "$BIN"; exit 0; fi

log() { echo "testbed: $*" >&2; }
export GOFLAGS="${GOFLAGS:-} -trimpath"
export CGO_ENABLED=0

# Debian packages: only when one of the commands is missing.
need_apt=0
for cmd in ffmpeg ffprobe nginx prometheus openssl unshare ip nft; do
  command -v "$cmd" >/dev/null 2>&1 || need_apt=1
done
[[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ]] || need_apt=1
if (( need_apt )); then
  log "installing Debian packages: ${DEBIAN_PACKAGES[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Debian starts nginx and Prometheus as services on install; the test bed runs its own
  # instances and must not touch anyone else's. A policy-rc.d that answers 101 ("action
  # forbidden") keeps the packages from starting any service, so nothing needs stopping
  # afterwards (an administrator's own policy-rc.d is left as it is).
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\n# Written by roomrec hack/testbed.sh while it installs packages.\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    own_policy=1
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${DEBIAN_PACKAGES[@]}" >/dev/null
  if (( own_policy )); then rm -f "$policy"; trap - EXIT; fi
fi

mkdir -p "$BIN"

# A wrapper module that depends on a module with staging replaces must repeat them with
# published versions: replaces in a dependency's go.mod are ignored (docs/testing.md).
build_wrapped() { # name module version packages...
  local name=$1 module=$2 version=$3; shift 3
  local dir="$CACHE/testbed/src/$name-$version"
  mkdir -p "$dir"
  local gomod
  gomod=$(cd "$dir" && GOFLAGS= go mod download -json "$module@$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "module roomrec.dev/testbed/$name"
    echo
    echo "go $(sed -n 's/^go \([0-9.]*\).*/\1/p' "$gomod")"
    echo
    echo "require $module $version"
    # Each "X => ./staging/..." (or other local path) becomes "X => X <published version>".
    awk -v ver="$version" '
      /^replace \(/ { inblock=1; next }
      inblock && /^\)/ { inblock=0; next }
      { line=$0; sub(/^replace /, "", line) }
      (inblock || $0 ~ /^replace /) && line ~ /=> \.\.?\// {
        split(line, parts, " "); mod=parts[1]
        print mod
      }' "$gomod" | while read -r mod; do
        echo "replace $mod => $mod $(published_version "$mod" "$version")"
      done
  } > "$dir/go.mod"
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    for p in "$@"; do printf '\t_ "%s"\n' "$p"; done
    printf ')\n'
  } > "$dir/tools.go"
  (cd "$dir" && GOFLAGS= go mod tidy)
}

go_build() { # wrapper-name version output package [ldflags]
  # Built beside and renamed into place: a running test bed keeps its binaries.
  (cd "$CACHE/testbed/src/$1-$2" && go build -ldflags "${5:-}" -o "$3.new" "$4" && mv -f "$3.new" "$3")
}

# Release builds stamp their version; without it the API server reports v0.0.0 and Helm
# refuses any chart with a kubeVersion constraint.
k8s_ldflags() { # version
  local v=$1 minor=${1#v1.}; minor=${minor%%.*}
  local x
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  echo "$x"
}

# k8s.io/api etc. are published as v0.N.P for k8s v1.N.P; etcd's sibling modules share its version.
published_version() { # module wrapper-version
  case "$1" in
    k8s.io/*) echo "v0.${2#v1.}" ;;
    *) echo "$2" ;;
  esac
}

stamped() { "$BIN/kube-apiserver" --version 2>/dev/null | grep -q "$KUBERNETES_VERSION"; }
if [[ ! -x "$BIN/kube-apiserver" || ! -x "$BIN/kube-controller-manager" || ! -x "$BIN/kubectl" ]] || ! stamped; then
  log "building Kubernetes $KUBERNETES_VERSION (kube-apiserver, kube-controller-manager, kubectl)"
  start=$SECONDS
  build_wrapped kubernetes k8s.io/kubernetes "$KUBERNETES_VERSION" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    go_build kubernetes "$KUBERNETES_VERSION" "$BIN/$cmd" "k8s.io/kubernetes/cmd/$cmd" "$(k8s_ldflags "$KUBERNETES_VERSION")"
  done
  log "Kubernetes built in $((SECONDS - start)) s"
fi

if [[ ! -x "$BIN/etcd" ]]; then
  log "building etcd $ETCD_VERSION"
  start=$SECONDS
  build_wrapped etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
  go_build etcd "$ETCD_VERSION" "$BIN/etcd" go.etcd.io/etcd/server/v3
  log "etcd built in $((SECONDS - start)) s"
fi

if [[ ! -x "$BIN/helm" ]]; then
  log "building helm $HELM_VERSION"
  GOBIN="$BIN" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

if [[ ! -x "$BIN/versitygw" ]]; then
  log "building versitygw $VERSITYGW_VERSION"
  GOBIN="$BIN" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi

# MediaMTX's module cannot be `go install`ed: its go.mod replaces two pion modules (replaces
# count only in the main module) and it embeds two files its release process generates (the
# version, and hls.js for its HLS server's browser page, downloaded by `go generate`). So its
# module source is copied and built as the main module, with the version written and the page's
# script left out (the tests read HLS with ffmpeg, never that page).
if ! "$BIN/mediamtx" --version 2>/dev/null | grep -qx "$MEDIAMTX_VERSION"; then
  log "building mediamtx $MEDIAMTX_VERSION"
  module_dir=$(GOFLAGS= go mod download -json "github.com/bluenviron/mediamtx@$MEDIAMTX_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  src="$CACHE/testbed/src/mediamtx-$MEDIAMTX_VERSION"
  rm -rf "$src" && mkdir -p "$(dirname "$src")" && cp -r "$module_dir" "$src" && chmod -R u+w "$src"
  echo "$MEDIAMTX_VERSION" > "$src/internal/core/VERSION"
  echo "// hls.js is left out of roomrec's test build: the browser page is not used" > "$src/internal/servers/hls/hls.min.js"
  (cd "$src" && go build -o "$BIN/mediamtx.new" . && mv -f "$BIN/mediamtx.new" "$BIN/mediamtx")
fi

# Node-Media-Server from the npm registry, run by a launcher in the bin directory.
NMS_DIR="$CACHE/testbed/node-media-server-$NODE_MEDIA_SERVER_VERSION"
if [[ ! -f "$NMS_DIR/node_modules/node-media-server/bin/app.js" || ! -x "$BIN/node-media-server" ]]; then
  log "installing node-media-server $NODE_MEDIA_SERVER_VERSION"
  command -v npm >/dev/null || { echo "npm is missing: Node-Media-Server runs on Node.js (20 or newer)" >&2; exit 1; }
  mkdir -p "$NMS_DIR"
  (cd "$NMS_DIR" && npm install --no-audit --no-fund --loglevel=error "node-media-server@$NODE_MEDIA_SERVER_VERSION" >/dev/null)
  printf '#!/bin/sh\n# Written by roomrec hack/testbed.sh: Node-Media-Server %s.\nexec node "%s/node_modules/node-media-server/bin/app.js" "$@"\n' \
    "$NODE_MEDIA_SERVER_VERSION" "$NMS_DIR" > "$BIN/node-media-server.new"
  chmod 0755 "$BIN/node-media-server.new" && mv -f "$BIN/node-media-server.new" "$BIN/node-media-server"
fi

# Only the CRDs of prometheus-operator, from its Go module (no build): tests dry-run the chart's
# monitoring objects against them. The version file makes a new pin fetch again.
CRDS="$(dirname "$BIN")/monitoring-crds"
if [[ "$(cat "$CRDS/VERSION" 2>/dev/null)" != "$PROMETHEUS_OPERATOR_VERSION" ]]; then
  log "fetching the prometheus-operator $PROMETHEUS_OPERATOR_VERSION CRDs"
  module_dir=$(GOFLAGS= go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$CRDS" && mkdir -p "$CRDS"
  for kind in servicemonitors podmonitors prometheusrules; do
    install -m 0644 "$module_dir/example/prometheus-operator-crd/monitoring.coreos.com_$kind.yaml" "$CRDS/"
  done
  echo "$PROMETHEUS_OPERATOR_VERSION" > "$CRDS/VERSION"
fi

echo "$BIN"
