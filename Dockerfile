# profile-worker container image: a release build in a Rust builder stage, then a minimal non-root
# runtime holding only the binary and the CA bundle. Works with BuildKit and buildah 1.28 alike
# (no COPY --link, no heredocs).
#
#   docker build --build-arg PROFILE_WORKER_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" -t profile-worker .
#
# The base images are arguments so mirrors and pinned digests can be used without editing this file.
ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS builder
WORKDIR /src

# Dependency layer: build every dependency against a stub crate so that source edits reuse it.
# Target sections other than the binary are dropped from the stub manifest because their files
# (benches, tests, examples) are not copied yet; Cargo.lock keeps the versions exact.
COPY Cargo.toml Cargo.lock build.rs ./
RUN sed -i -e '/^\[\[\(bench\|test\|example\)\]\]/,/^$/d' Cargo.toml \
    && mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources. build.rs reads the commit from this argument: the context has no .git.
ARG PROFILE_WORKER_GIT_COMMIT=unknown
COPY . .
# COPY keeps the context's mtimes, which can be older than the stub build: touch so cargo rebuilds.
RUN touch src/main.rs src/lib.rs build.rs \
    && PROFILE_WORKER_GIT_COMMIT="${PROFILE_WORKER_GIT_COMMIT}" cargo build --release --locked --bin profile-worker \
    && install -D -m 0755 target/release/profile-worker /out/profile-worker \
    && /out/profile-worker version

FROM ${RUNTIME_IMAGE}
ARG PROFILE_WORKER_GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="profile-worker" \
      org.opencontainers.image.description="SQS consumer daemon that generates entity profiles with Amazon Bedrock" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.revision="${PROFILE_WORKER_GIT_COMMIT}"
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/profile-worker /usr/local/bin/profile-worker
# Numeric user so Kubernetes can verify runAsNonRoot; 65532 is the conventional "nonroot" id.
USER 65532:65532
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080
# The binary is PID 1 and handles SIGTERM itself: it drains for shutdown.grace_seconds, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/profile-worker"]
CMD ["run"]
