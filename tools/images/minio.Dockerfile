# MinIO for the chart, built from the same pinned source as the tests' server (upstream ships
# source only now). Build from the repository root:
#   docker build -f tools/images/minio.Dockerfile --build-arg MINIO_VERSION=... -t pipeorch/minio:dev .
ARG GO_IMAGE=golang:1.26-bookworm
FROM ${GO_IMAGE} AS build
ARG MINIO_VERSION
RUN test -n "$MINIO_VERSION" \
 && CGO_ENABLED=0 GOFLAGS=-trimpath go install -ldflags "-s -w" "github.com/minio/minio@${MINIO_VERSION}"

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /go/bin/minio /usr/bin/minio
USER 65532:65532
EXPOSE 9000
ENTRYPOINT ["/usr/bin/minio"]
