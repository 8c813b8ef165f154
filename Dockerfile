# syntax=docker/dockerfile:1
# provisio container image: docs/deploy.md, "Container".
#
#   docker build -t provisio .
#   docker run -d --name provisio -p 8318:8318 -v provisio-data:/data provisio
#
# Two stages: the release binary is built with the locked dependencies, then copied alone
# into a slim Debian runtime (glibc, like the builder, so the binary runs unchanged).

# --- build ----------------------------------------------------------------------------------
# The Rust release the lock file needs (Cargo.toml `rust-version`).
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /build
# Only what `cargo build` reads: the manifest and lock, the sources, the migrations embedded
# with include_str!, and the bench the manifest declares (cargo checks that its file exists).
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
COPY schema/ schema/
COPY benches/ benches/
# The registry and target caches survive between builds (BuildKit); the binary is copied out
# of the cached target directory, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin provisio \
    && install -m 0755 target/release/provisio /usr/local/bin/provisio

# --- run ------------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ca-certificates: the system roots PostgreSQL over TLS verifies a managed server against.
# The binary needs nothing else: SQLite is compiled in, TLS is rustls, and libc and libgcc_s
# are in the base image (`ldd target/release/provisio`, checked by tests/deploy.rs).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed, non-root identity (numeric in USER, so Kubernetes runAsNonRoot can check it), so a
# volume's owner is the same across image rebuilds.
RUN groupadd --system --gid 10001 provisio \
    && useradd --system --uid 10001 --gid provisio --home-dir /data --no-create-home \
       --shell /usr/sbin/nologin provisio \
    && install -d -o provisio -g provisio -m 0700 /data
COPY --from=builder /usr/local/bin/provisio /usr/local/bin/provisio
# The bundled hook scripts (safe to load as they are: hooks/README.md) with their fixtures,
# so `provisio hooks test /etc/provisio/hooks` works in the container. Mount your own over it.
COPY hooks/ /etc/provisio/hooks/

# Everything the server writes lives in /data (the SQLite file, 0600, in a 0700 directory).
# A provisio.toml in /etc/provisio (the working directory) is read when present.
ENV PROVISIO_LISTEN=0.0.0.0:8318 \
    PROVISIO_DATA_DIR=/data \
    PROVISIO_HOOKS__DIR=/etc/provisio/hooks
WORKDIR /etc/provisio
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8318
# GET /readyz on the listen address (loopback): 200 when the database answers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["provisio", "healthcheck", "--timeout", "3"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["provisio"]
CMD ["serve"]
