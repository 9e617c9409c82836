# profile-worker container image: a release build in a Rust builder stage, then a non-root runtime
# with no shell and no package manager: only the binary, the files of the Debian packages it links
# against (libc6, libgcc-s1) and the CA bundle. Works with BuildKit and buildah 1.28 alike (no COPY
# --link, no heredocs).
#
#   docker build --build-arg PROFILE_WORKER_GIT_COMMIT="$(git rev-parse --short=12 HEAD)" \
#     --build-arg PROFILE_WORKER_CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" -t profile-worker:0.1.0 .
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
COPY crates/contract/Cargo.toml crates/contract/
RUN sed -i -e '/^\[\[\(bench\|test\|example\)\]\]/,/^$/d' Cargo.toml \
    && mkdir -p src crates/contract/src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs crates/contract/src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src crates/contract/src

# The real sources. build.rs reads the commit from this argument: the context has no .git.
ARG PROFILE_WORKER_GIT_COMMIT=unknown
COPY . .
# COPY keeps the context's mtimes, which can be older than the stub build: touch so cargo rebuilds.
RUN touch src/main.rs src/lib.rs build.rs crates/contract/src/lib.rs \
    && PROFILE_WORKER_GIT_COMMIT="${PROFILE_WORKER_GIT_COMMIT}" cargo build --release --locked --bin profile-worker \
    && install -D -m 0755 target/release/profile-worker /out/profile-worker \
    && /out/profile-worker version

# The runtime's root file system, assembled in a Debian stage: the files dpkg lists for the packages
# the binary links against (libc6, libgcc-s1; see `ldd`), the CA bundle, and passwd/group entries for
# the numeric user. No shell, coreutils, dpkg or apt are copied.
FROM ${RUNTIME_IMAGE} AS runtime-root
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=builder /out/profile-worker /rootfs/usr/local/bin/profile-worker
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt
RUN dpkg -L libc6 libgcc-s1 \
    | grep -v -e '^/usr/share/doc' -e '^/usr/share/lintian' -e '^/usr/share/man' \
    | while read -r path; do \
        if [ -f "$path" ] || [ -L "$path" ]; then \
          dir=$(readlink -f "$(dirname "$path")") && mkdir -p "/rootfs$dir" && cp -a "$path" "/rootfs$dir/"; \
        fi; \
      done \
    && for link in /lib /lib64; do if [ -L "$link" ]; then cp -a "$link" /rootfs/; fi; done \
    && mkdir -p /rootfs/tmp && chmod 1777 /rootfs/tmp \
    && printf 'root:x:0:0:root:/root:/nonexistent\nnonroot:x:65532:65532:nonroot:/nonexistent:/nonexistent\n' >/rootfs/etc/passwd \
    && printf 'root:x:0:\nnonroot:x:65532:\n' >/rootfs/etc/group \
    && chroot /rootfs /usr/local/bin/profile-worker version \
    && if [ -e /rootfs/bin/sh ] || [ -e /rootfs/usr/bin/sh ] || [ -e /rootfs/usr/bin/dpkg ]; then exit 1; fi

FROM scratch
ARG PROFILE_WORKER_GIT_COMMIT=unknown
# Keep in step with Cargo.toml's version (scripts/deploy-check compares them).
ARG PROFILE_WORKER_VERSION=0.1.0
# Where the source lives (set it to your repository's URL).
ARG PROFILE_WORKER_SOURCE=https://github.com/bluemoxon/profile-worker
# Build time, RFC 3339 (pass --build-arg PROFILE_WORKER_CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)").
ARG PROFILE_WORKER_CREATED=unknown
LABEL org.opencontainers.image.title="profile-worker" \
      org.opencontainers.image.description="SQS consumer daemon that generates entity profiles with Amazon Bedrock" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="${PROFILE_WORKER_SOURCE}" \
      org.opencontainers.image.version="${PROFILE_WORKER_VERSION}" \
      org.opencontainers.image.created="${PROFILE_WORKER_CREATED}" \
      org.opencontainers.image.revision="${PROFILE_WORKER_GIT_COMMIT}"
COPY --from=runtime-root /rootfs/ /
# Numeric user so Kubernetes can verify runAsNonRoot; 65532 is the conventional "nonroot" id.
USER 65532:65532
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
EXPOSE 8080
# The binary is PID 1 and handles SIGTERM itself: it drains for shutdown.grace_seconds, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/profile-worker"]
CMD ["run"]
