# syntax=docker/dockerfile:1
#
# The incident-bridge image: the release binary on a distroless base, running as a non-root
# user. Build with:
#
#   docker build -t incident-bridge:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Stages: `chef` pins the toolchain once, `planner` reduces the sources to a dependency recipe,
# `builder` compiles the dependencies from that recipe (a layer that stays cached until
# Cargo.toml or Cargo.lock change) and then the crate itself, `runtime` is what ships.

# Every Rust stage derives from this one image so dependencies and crate are compiled by the
# same compiler; a mismatch would silently throw away the cached dependency layer.
#
# Both base images are pinned by digest (the multi-platform index), so a tag that moves, or is
# pushed over, cannot change what gets built; the tag stays for readers. Where a digest is given
# the tag is not consulted, so RUST_VERSION and RUST_DIGEST change together: re-resolve with
#   docker buildx imagetools inspect rust:1.95-bookworm
#   docker buildx imagetools inspect gcr.io/distroless/cc-debian12:nonroot
# and pass --build-arg RUST_DIGEST=sha256:... / RUNTIME_DIGEST=sha256:... to try newer ones.
ARG RUST_VERSION=1.95
ARG RUST_DIGEST=sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1
ARG RUNTIME_DIGEST=sha256:ce0d66bc0f64aae46e6a03add867b07f42cc7b8799c949c2e898057b7f75a151
ARG CARGO_CHEF_VERSION=0.1.78

FROM rust:${RUST_VERSION}-bookworm@${RUST_DIGEST} AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json --bin incident-bridge

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Dependencies only: this layer is reused as long as the recipe (manifests and lock file) is
# unchanged, which is most builds.
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin incident-bridge
COPY . .
# --locked: the image must contain exactly the dependency versions that were reviewed and
# tested, never a fresh resolution. `install -s` strips the symbol table and debug info, which
# the image has no use for (panic messages keep their file and line; backtraces lose function
# names), and the stripped binary is what gets the smoke run.
RUN cargo build --release --locked --bin incident-bridge \
    && install -D -s -m 0755 target/release/incident-bridge /out/incident-bridge \
    && /out/incident-bridge --version

# cc-debian12 carries glibc, libgcc and CA certificates, which is all the binary links against;
# no shell or package manager ships. The :nonroot variant's user is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot@${RUNTIME_DIGEST} AS runtime

ARG RUNTIME_DIGEST
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="incident-bridge" \
      org.opencontainers.image.description="Bridges monitoring alerts and native incident commands from HTTP webhooks and NATS to the SCWM Incident API" \
      org.opencontainers.image.url="https://github.com/incident-bridge/incident-bridge" \
      org.opencontainers.image.source="https://github.com/incident-bridge/incident-bridge" \
      org.opencontainers.image.documentation="https://github.com/incident-bridge/incident-bridge#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot" \
      org.opencontainers.image.base.digest="${RUNTIME_DIGEST}"

COPY --from=builder /out/incident-bridge /usr/local/bin/incident-bridge

# Smoke test in the final image: proves every shared library the binary needs is present in the
# distroless base, not only in the builder.
RUN ["incident-bridge", "--version"]

# Numeric, so Kubernetes can verify runAsNonRoot without knowing the image's /etc/passwd.
USER 65532:65532

# The config path comes from this variable rather than from a CMD so that either way of changing
# it works: `-e INCIDENT_BRIDGE_CONFIG=/other.toml`, or arguments such as `--config /other.toml`
# (a CMD holding --config would silently win over the variable).
ENV INCIDENT_BRIDGE_CONFIG=/etc/incident-bridge/config.toml

# HTTP: webhooks, native commands, /healthz, /readyz and /metrics.
EXPOSE 8080

ENTRYPOINT ["incident-bridge", "serve"]
