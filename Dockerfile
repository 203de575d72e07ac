# syntax=docker/dockerfile:1
# The poller image: the `sqskit` CLI (package sqskit-cli) on distroless, as a non-root user.
#
#   docker buildx build --platform linux/arm64 -t sqskit:latest .      # the template runs ARM64 tasks
#
# Build context: the repository root (the whole workspace is needed to build one member;
# .dockerignore keeps target/ and the venvs out). Not built by this project's CI (no Docker
# there): scripts/check_template.py checks the package, binary and context it names.

# glibc of the builder (Debian 12) = glibc of the runtime image (distroless Debian 12)
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# --locked: the committed Cargo.lock; the release profile (fat LTO, unwinding) is the workspace's
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p sqskit-cli --bin sqskit \
 && install -D -m 0755 target/release/sqskit /out/sqskit

# cc: glibc, libgcc_s (unwinding) and CA certificates (/etc/ssl/certs), no shell; runs as 65532
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/sqskit /usr/local/bin/sqskit
USER nonroot:nonroot
# Prometheus metrics when SQSKIT_METRICS_ADDR is set (the template uses 0.0.0.0:9090)
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/sqskit"]
# configuration from SQSKIT_* variables, e.g. SQSKIT_QUEUE_URL and SQSKIT_HTTP (see `sqskit poll --help`)
CMD ["poll"]
