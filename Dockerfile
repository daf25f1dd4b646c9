# Hubcast's container image: the `hubcast` binary on a small runtime image, as a non-root
# user, listening on all interfaces (8080 HTTP: clients, REST, /metrics; 50051 gRPC), with a
# health check that asks the server's own /api/health (`hubcast health`: the runtime image
# needs no shell or curl).
#
# With a registry (the usual way):
#   docker build -t hubcast .
#   docker run -p 8080:8080 -p 50051:50051 hubcast
# The builder and runtime images are build arguments: any Rust image that can compile the
# workspace (rust-version in Cargo.toml), and any glibc runtime image, e.g.
#   docker build --build-arg RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim -t hubcast .
#
# Without a registry (scripts/image, run by scripts/test): BINARY_FROM=prebuilt and
# RUNTIME_IMAGE=scratch take a root filesystem prepared outside, in the build context's
# target/image-root/ (the binary, and the shared libraries `ldd` lists for it), so nothing is
# pulled; the unused `build` stage is skipped.

ARG BUILDER_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12
# Where the root filesystem with the binary comes from: `build` (compiled here) or `prebuilt`.
ARG BINARY_FROM=build

FROM ${BUILDER_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p hubcast-server --bin hubcast \
 && mkdir -p /image-root/usr/local/bin \
 && cp target/release/hubcast /image-root/usr/local/bin/hubcast

FROM scratch AS prebuilt
COPY target/image-root/ /image-root/

FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_IMAGE}
COPY --from=binary /image-root/ /
# 65532: the conventional non-root user of distroless images; numeric, so the runtime image
# needs no /etc/passwd entry.
USER 65532:65532
ENV HUBCAST_LISTEN=0.0.0.0:8080 \
    HUBCAST_GRPC_LISTEN=0.0.0.0:50051
EXPOSE 8080 50051
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/hubcast", "health"]
ENTRYPOINT ["/usr/local/bin/hubcast"]
