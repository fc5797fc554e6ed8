# syntax=docker/dockerfile:1
# IoT Support image: one static binary on distroless, non-root, read-only root
# filesystem (run with --read-only), /data the only writable volume.
#   docker build --build-arg VERSION=1.2.3 --build-arg COMMIT=$(git rev-parse HEAD) \
#                --build-arg DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ) -t iotsupport:1.2.3 .
#   docker run --read-only -v iotsupport-data:/data -p 3101:3101 iotsupport:1.2.3
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
# The build flags live in scripts/build.sh (the image test builds with it too).
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH VERSION=$VERSION COMMIT=$COMMIT DATE=$DATE \
    sh scripts/build.sh /out/iotsupport && \
    mkdir -p /out/data/tmp

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
LABEL org.opencontainers.image.title="IoT Support" \
      org.opencontainers.image.description="Firmware bundles and core dumps for ESP32 fleets" \
      org.opencontainers.image.source="https://github.com/iotsupport/iotsupport" \
      org.opencontainers.image.version="$VERSION" \
      org.opencontainers.image.revision="$COMMIT" \
      org.opencontainers.image.created="$DATE"
COPY --from=build /out/iotsupport /usr/local/bin/iotsupport
# Owned by the non-root user so a fresh named volume on /data is writable.
COPY --from=build --chown=65532:65532 /out/data /data
# Every path the service writes to is under /data; nothing else needs to be writable.
ENV HOST=0.0.0.0 \
    PORT=3101 \
    DATABASE_URL=sqlite:/data/iotsupport.db \
    STORAGE_DIR=/data/blobs \
    FIRMWARE_CACHE_DIR=/data/cache \
    TEMP_DIR=/data/tmp
USER 65532:65532
VOLUME ["/data"]
EXPOSE 3101
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/iotsupport", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/iotsupport"]
CMD ["serve"]
