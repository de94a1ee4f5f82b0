# syntax=docker/dockerfile:1
#
# lapse container image: a release build of the `lapse` binary on a distroless runtime (no shell,
# no package manager), running as uid/gid 65532 (distroless "nonroot").
#
#   docker build -t lapse:0.1.0 .
#   docker run --rm lapse:0.1.0 --help
#
# The Helm chart in helm/lapse runs it with `run --yes -c /etc/lapse/lapse.yaml --log-format json`.

# ---------------------------------------------------------------------------------------- build ---
# Bookworm, like the runtime (distroless cc-debian12): the binary links against the builder's glibc,
# so a newer builder (trixie) would produce a binary the runtime cannot load.
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock change.
# Stub sources stand in for the crate (a library and a binary); --locked refuses to touch Cargo.lock.
# .cargo/config.toml sets the bundled SQLite's compile options (LIBSQLITE3_FLAGS): it must be there
# when the dependencies are built.
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin lapse \
    && rm -rf src

# The crate itself, and examples/demo, which src/demo.rs embeds (include_str!). COPY keeps the
# files' modification times, which may be older than the stub build's; touching them makes sure
# cargo rebuilds the crate rather than reuse the stub.
COPY src ./src
COPY examples ./examples
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin lapse \
    && install -D -m 0755 target/release/lapse /out/lapse

# -------------------------------------------------------------------------------------- runtime ---
# glibc, libgcc, CA certificates and tzdata; no shell. The :nonroot tag defaults to uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

LABEL org.opencontainers.image.title="lapse" \
      org.opencontainers.image.description="Retention-enforcement worker: destroys personal data whose purpose has lapsed, honours legal holds, writes a verifiable destruction report" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/lapse /usr/local/bin/lapse

# Numeric, so Kubernetes can verify runAsNonRoot without a runAsUser in the pod spec.
USER 65532:65532
WORKDIR /home/nonroot
ENTRYPOINT ["/usr/local/bin/lapse"]
CMD ["--help"]
