#!/usr/bin/env bash
# Build the pinned third-party test binaries (toxiproxy, kwok, helm, MinIO, etcd, Kubernetes)
# from Go modules into a cache outside the clone, keyed by version, and reuse them afterwards.
#
#   bash tools/build.sh [NAME|GROUP ...]     (default: all)
#   bash tools/build.sh --update-wrappers    regenerate tools/{etcd,kubernetes}/go.{mod,sum}
#
# NAME: toxiproxy-server (or toxiproxy), kwok, kwokctl, helm, kube-score, minio, etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl. GROUP: k8s (the four Kubernetes
# binaries), all.
#
# Layout under ROOT=${PIPEORCH_TOOLS_DIR:-$HOME/.cache/pipeorch-tools}:
#   bin/<name>-<version>/<name>   one build per version; skipped when it already exists
#   bin/current/<name>            symlink to the pinned version: put bin/current on PATH
#   go/mod, go/build              GOMODCACHE (~2.9 GB) and GOCACHE (~5 GB), kept between runs
#   go/mod/golang.org/toolchain@v0.0.1-go<version>.<os>-<arch>
#                                 the Go fetched when none >= GO_MIN_VERSION is found (~240 MB)
#   logs/<name>-<version>.log     go's output of the last build (shown when a build fails)
# Versions: tools/versions.env. Nothing is downloaded but Go modules from the module proxy.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tools/versions.env
source "$HERE/versions.env"

ROOT=${PIPEORCH_TOOLS_DIR:-$HOME/.cache/pipeorch-tools}
BIN=$ROOT/bin
K8S_STAGING_VERSION=v0.${KUBERNETES_VERSION#v1.}  # v1.36.3 -> v0.36.3
K8S_MINOR=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
K8S_MAJOR=$(cut -d. -f1 <<<"${KUBERNETES_VERSION#v}")
K8S_LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
-X k8s.io/component-base/version.gitMajor=$K8S_MAJOR \
-X k8s.io/component-base/version.gitMinor=$K8S_MINOR \
-X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION"

ALL=(toxiproxy-server kwok kwokctl helm kube-score minio etcd
  kube-apiserver kube-controller-manager kube-scheduler kubectl)
K8S=(kube-apiserver kube-controller-manager kube-scheduler kubectl)

die() { echo "tools/build.sh: $*" >&2; exit 1; }

usage() {
  sed -n '2,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# go_version GO: the version of the go command GO (1.26.8), or nothing if it does not run.
go_version() {
  local v
  v=$(GOTOOLCHAIN=local "$1" env GOVERSION 2>/dev/null) || return 0
  echo "${v#go}"
}

# go_recent VERSION: whether VERSION is GO_MIN_VERSION or newer.
go_recent() {
  local hmaj hmin wmaj wmin
  [[ -n $1 ]] || return 1
  IFS=. read -r hmaj hmin _ <<<"$1.0"
  IFS=. read -r wmaj wmin _ <<<"$GO_MIN_VERSION.0"
  hmin=${hmin%%[!0-9]*}
  ((hmaj > wmaj || (hmaj == wmaj && hmin >= wmin)))
}

# Where fetch_go unpacks Go $GO_TOOLCHAIN_VERSION: the module cache's copy of its module.
fetched_goroot() {
  local arch
  case $(uname -m) in
    x86_64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch=$(uname -m) ;;
  esac
  echo "$ROOT/go/mod/golang.org/toolchain@v0.0.1-go$GO_TOOLCHAIN_VERSION.$(uname -s | tr '[:upper:]' '[:lower:]')-$arch"
}

# Use a Go >= GO_MIN_VERSION: the go on PATH, else the official toolchain's usual place (a
# fresh shell may not have it on PATH yet), else the one an earlier run fetched; else fetch it.
check_go() {
  local go fetched
  go=$(command -v go || true)
  if [[ -n $go ]] && go_recent "$(go_version "$go")"; then
    return
  fi
  fetched=$(fetched_goroot)
  for go in /usr/local/go/bin/go "$fetched/bin/go"; do
    if [[ -x $go ]] && go_recent "$(go_version "$go")"; then
      export PATH=${go%/go}:$PATH
      return
    fi
  done
  fetch_go "$fetched"
}

# fetch_go GOROOT: fetch Go $GO_TOOLCHAIN_VERSION from the Go module proxy, where every Go
# release is a module, golang.org/toolchain (what GOTOOLCHAIN=go<version> downloads in Go 1.21
# and later), using the older go found on PATH to download it: any go that knows modules will
# do, Debian 12's golang-go (Go 1.19, older than GOTOOLCHAIN) too. The download is checked
# against the checksum database like any module's, and the toolchain is cached with them.
fetch_go() {
  local goroot=$1 old start
  old=$(command -v go) || die "Go >= $GO_MIN_VERSION is needed to build the test binaries, and there is no go at all.
  Install any Go (Debian's golang-go will do: apt-get install golang-go) and this script fetches
  Go $GO_TOOLCHAIN_VERSION from the Go module proxy; or install the official Go toolchain
  ($GO_MIN_VERSION or newer) in /usr/local/go."
  echo "No Go >= $GO_MIN_VERSION found ($old is go$(go_version "$old")): fetching Go" \
    "$GO_TOOLCHAIN_VERSION from the Go module proxy into $ROOT/go/mod."
  start=$SECONDS
  mkdir -p "$ROOT/go/mod"
  (cd "$ROOT" && GOMODCACHE=$ROOT/go/mod GOTOOLCHAIN=local GOFLAGS= GO111MODULE=on \
    "$old" mod download "golang.org/toolchain@${goroot##*/toolchain@}") ||
    die "could not fetch Go $GO_TOOLCHAIN_VERSION (golang.org/toolchain) with $old"
  # Module zips keep no file modes: set the execute bits as the go command does on the
  # toolchains it downloads (bin/ last, so that bin/go never runs before its tools can).
  find "$goroot/pkg/tool" -type f -exec chmod a+x {} +
  [[ ! -d $goroot/lib ]] || find "$goroot/lib" -type f -name 'go_?*_?*_exec' -exec chmod a+x {} +
  chmod a+x "$goroot"/bin/*
  go_recent "$(go_version "$goroot/bin/go")" ||
    die "$goroot/bin/go is not Go >= $GO_MIN_VERSION (GO_TOOLCHAIN_VERSION in tools/versions.env)"
  export PATH=$goroot/bin:$PATH
  echo "fetched go$(go_version "$goroot/bin/go") in $((SECONDS - start)) s"
}

go_env() {
  export GOMODCACHE=$ROOT/go/mod GOCACHE=$ROOT/go/build
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
}

# --update-wrappers: write the wrapper modules' go.mod from versions.env and tidy them.
update_wrappers() {
  local etcd=$HERE/etcd k8s=$HERE/kubernetes gomod staging
  cat >"$etcd/go.mod" <<EOF
module pipeorch.dev/tools/etcd

go 1.26.0

tool go.etcd.io/etcd/server/v3

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  rm -f "$etcd/go.sum"
  (cd "$etcd" && go mod tidy)

  # The staging modules are the `=> ./staging/...` replaces of Kubernetes' own go.mod.
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f $gomod ]] || die "could not download k8s.io/kubernetes@$KUBERNETES_VERSION's go.mod"
  staging=$(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' "$gomod" | sort -u)
  [[ -n $staging ]] || die "no ./staging replaces found in $gomod"
  {
    echo "// Generated by tools/build.sh --update-wrappers from tools/versions.env: do not edit."
    echo "module pipeorch.dev/tools/kubernetes"
    echo
    echo "go 1.26.0"
    echo
    echo "tool ("
    for c in "${K8S[@]}"; do printf '\tk8s.io/kubernetes/cmd/%s\n' "$c"; done
    echo ")"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "// Every staging module of k8s.io/kubernetes $KUBERNETES_VERSION ($(wc -l <<<"$staging")), at its tag."
    echo "replace ("
    for m in $staging; do printf '\t%s => %s %s\n' "$m" "$m" "$K8S_STAGING_VERSION"; done
    echo ")"
  } >"$k8s/go.mod"
  rm -f "$k8s/go.sum"
  (cd "$k8s" && go mod tidy)
  echo "wrote $etcd/go.mod, $k8s/go.mod ($(wc -l <<<"$staging") staging replaces) and their go.sum"
}

# The wrapper modules must pin what versions.env says.
check_wrappers() {
  grep -Eq "[[:space:]]go\.etcd\.io/etcd/server/v3 $ETCD_VERSION( |\$)" "$HERE/etcd/go.mod" &&
    grep -Eq "[[:space:]]k8s\.io/kubernetes $KUBERNETES_VERSION( |\$)" "$HERE/kubernetes/go.mod" ||
    die "tools/etcd or tools/kubernetes go.mod does not match tools/versions.env:
  run 'bash tools/build.sh --update-wrappers' and commit the go.mod and go.sum files."
}

version_of() {
  case $1 in
    toxiproxy-server) echo "$TOXIPROXY_VERSION" ;;
    kwok | kwokctl) echo "$KWOK_VERSION" ;;
    helm) echo "$HELM_VERSION" ;;
    kube-score) echo "$KUBE_SCORE_VERSION" ;;
    minio) echo "$MINIO_VERSION" ;;
    etcd) echo "$ETCD_VERSION" ;;
    kube-* | kubectl) echo "$KUBERNETES_VERSION" ;;
  esac
}

# build_<name> OUTDIR: leave OUTDIR/<name>.
go_install() { # OUTDIR PKG VERSION BUILT_NAME NAME
  GOBIN=$1 go install -ldflags "-s -w" "$2@$3"
  [[ $4 == "$5" ]] || mv "$1/$4" "$1/$5"
}
build() { # NAME OUTDIR
  local name=$1 out=$2
  case $name in
    toxiproxy-server)
      go_install "$out" github.com/Shopify/toxiproxy/v2/cmd/server "$TOXIPROXY_VERSION" server "$name" ;;
    kwok | kwokctl) go_install "$out" "sigs.k8s.io/kwok/cmd/$name" "$KWOK_VERSION" "$name" "$name" ;;
    helm) go_install "$out" helm.sh/helm/v3/cmd/helm "$HELM_VERSION" helm helm ;;
    kube-score) go_install "$out" github.com/zegl/kube-score/cmd/kube-score "$KUBE_SCORE_VERSION" kube-score kube-score ;;
    minio) go_install "$out" github.com/minio/minio "$MINIO_VERSION" minio minio ;;
    etcd) (cd "$HERE/etcd" && go build -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3) ;;
    kube-* | kubectl)
      (cd "$HERE/kubernetes" && go build -ldflags "$K8S_LDFLAGS" -o "$out/$name" "k8s.io/kubernetes/cmd/$name") ;;
  esac
}

announced=
tmp=
trap '[[ -z $tmp ]] || rm -rf "$tmp"' EXIT

ensure() { # NAME
  local name=$1 version dest start log
  version=$(version_of "$name")
  dest=$BIN/$name-$version
  if [[ -x $dest/$name ]]; then
    printf '%-24s %-38s cached\n' "$name" "$version"
  else
    if [[ -z $announced ]]; then
      echo "Building the test binaries from pinned Go modules: about 12 minutes the first time," \
        "seconds afterwards (cache: $ROOT)."
      announced=1
    fi
    start=$SECONDS
    tmp=$(mktemp -d "$BIN/.build-$name.XXXXXX")
    log=$ROOT/logs/$name-$version.log
    if ! build "$name" "$tmp" >"$log" 2>&1 || [[ ! -x $tmp/$name ]]; then
      tail -n 30 "$log" >&2
      die "building $name $version failed (full log: $log)"
    fi
    rm -rf "$dest"
    mv "$tmp" "$dest"
    chmod 755 "$dest"
    tmp=
    printf '%-24s %-38s built in %d s\n' "$name" "$version" $((SECONDS - start))
  fi
  ln -sfn "../$name-$version/$name" "$BIN/current/$name"
}

main() {
  local want=() arg n
  for arg in "$@"; do
    case $arg in
      -h | --help) usage; exit 0 ;;
      --update-wrappers) check_go; go_env; update_wrappers; exit 0 ;;
      all) want+=("${ALL[@]}") ;;
      k8s | kubernetes) want+=("${K8S[@]}") ;;
      toxiproxy) want+=(toxiproxy-server) ;;
      *)
        [[ " ${ALL[*]} " == *" $arg "* ]] ||
          die "unknown binary '$arg': choose from ${ALL[*]}, k8s, all"
        want+=("$arg") ;;
    esac
  done
  ((${#want[@]})) || want=("${ALL[@]}")

  check_go
  go_env
  check_wrappers
  mkdir -p "$BIN/current" "$ROOT/logs" "$GOMODCACHE" "$GOCACHE"

  # In the fixed order of ALL, each once; one build at a time (kube-apiserver alone peaks at
  # 2.2 GB RSS, and go build already uses every core).
  local total=$SECONDS
  for n in "${ALL[@]}"; do
    if [[ " ${want[*]} " == *" $n "* ]]; then ensure "$n"; fi
  done
  echo "done in $((SECONDS - total)) s. Put the binaries on PATH:"
  echo "  export PATH=$BIN/current:\$PATH"
}

main "$@"
