#!/usr/bin/env bash
# kind up|down|images: the Kubernetes path on a machine with Docker and kind.
#   up:     create the cluster (kind/cluster.yaml), build and load the images, helm install
#   down:   delete the cluster
#   images: build the two images only
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-pipeorch}
TAG=${IMAGE_TAG:-dev}
RELEASE=${HELM_RELEASE:-po}
CONTROL_PLANE_IMAGE=pipeorch/control-plane:$TAG
WORKER_IMAGE=pipeorch/worker:$TAG
MINIO_IMAGE=pipeorch/minio:$TAG

need() {  # need COMMAND WHY HOW
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "kind/up.sh: '$1' is not installed; it is needed $2." >&2
    echo "  get it: $3" >&2
    exit 127
  fi
}
need_docker() {
  need docker "to build the images and to run kind's nodes" \
    "https://docs.docker.com/engine/install/ (Docker Engine; a running daemon)"
  if ! docker info >/dev/null 2>&1; then
    echo "kind/up.sh: docker is installed but its daemon does not answer (is it running?)" >&2
    exit 1
  fi
}
need_kind() {
  need kind "to create the cluster" "go install sigs.k8s.io/kind@v0.31.0"
}
need_helm() {
  need helm "to install the chart" "make tools TOOLS=helm (pinned; then add \$(make tools-path) to PATH)"
}

images() {
  need_docker
  docker build -f operator/Dockerfile -t "$CONTROL_PLANE_IMAGE" .
  docker build -f worker/Dockerfile -t "$WORKER_IMAGE" .
  # shellcheck source=../tools/versions.env
  source tools/versions.env
  docker build -f tools/images/minio.Dockerfile --build-arg MINIO_VERSION="$MINIO_VERSION" \
    -t "$MINIO_IMAGE" .
}

up() {
  need_docker; need_kind; need_helm
  kind get clusters 2>/dev/null | grep -qx "$CLUSTER" \
    || kind create cluster --name "$CLUSTER" --config kind/cluster.yaml
  images
  kind load docker-image --name "$CLUSTER" "$CONTROL_PLANE_IMAGE" "$WORKER_IMAGE" "$MINIO_IMAGE"
  helm upgrade --install "$RELEASE" charts/pipeline-orchestrator --wait --timeout 10m \
    --kube-context "kind-$CLUSTER" \
    --set image.tag="$TAG" --set minio.image="$MINIO_IMAGE"
  echo
  echo "next: kubectl --context kind-$CLUSTER apply -f examples/energy-pipeline.yaml"
  echo "      kubectl --context kind-$CLUSTER get tasks.pipeorch.dev -w"
}

down() {
  need_kind
  kind delete cluster --name "$CLUSTER"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  images) images ;;
  *) echo "usage: kind/up.sh up|down|images" >&2; exit 2 ;;
esac
