# The two images, from one build of the Cargo workspace (their dependencies are shared, so one
# `cargo build` costs little more than either alone). Build context: the repository root.
#   docker buildx build --target operator -t ghcr.io/roomrec/roomrec-operator:0.1.0 \
#     --build-arg SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" \
#     --output type=image,rewrite-timestamp=true .
#   docker buildx build --target worker -t ghcr.io/roomrec/roomrec-worker:0.1.0 …   (same flags)
# Always name the --target (without one, Docker builds the last stage: the worker).
# Reproducible: pinned base images, the committed Cargo.lock (--locked), fixed paths inside the
# builder, and SOURCE_DATE_EPOCH for every timestamp BuildKit (and useradd) writes. The
# worker's Debian packages are whatever the point release's mirror serves that day.
# operator/tests/images.rs checks this file against `cargo metadata`, the pods the operator and
# the chart run, and the test bed's node agent.

# The toolchain the tests run with; bookworm, so the binaries' glibc matches both runtimes.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-slim-bookworm
# distroless tags move: pin a digest (…:nonroot@sha256:…) when releasing.
ARG OPERATOR_BASE=gcr.io/distroless/cc-debian12:nonroot
# The Debian release the tests run on: its ffmpeg (5.1) is the one every worker test exercised.
ARG WORKER_BASE=docker.io/library/debian:12.11-slim

FROM ${RUST_IMAGE} AS build
ARG SOURCE_DATE_EPOCH
WORKDIR /src
# Every workspace member, since cargo reads the whole workspace.
COPY Cargo.toml Cargo.lock ./
COPY api api
COPY operator operator
COPY recorder-worker recorder-worker
COPY tests tests
RUN cargo build --release --locked -p roomrec-operator -p roomrec-worker

# The operator: glibc, libgcc and CA roots are all it needs (TLS is rustls with aws-lc built in).
FROM ${OPERATOR_BASE} AS operator
# crdgen prints the CRD this operator expects: `--entrypoint /usr/local/bin/crdgen`.
COPY --from=build /src/target/release/roomrec-operator /src/target/release/crdgen /usr/local/bin/
# distroless's nonroot; numeric, so the kubelet can enforce runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/roomrec-operator"]

FROM ${WORKER_BASE} AS worker
ARG SOURCE_DATE_EPOCH
# ffmpeg and ffprobe do the media work; ca-certificates are the roots the worker's TLS (the
# platform verifier) trusts. Logs, caches and apt lists go, so the layer depends on packages only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
 && ffmpeg -hide_banner -version > /dev/null && ffprobe -hide_banner -version > /dev/null \
 && rm -rf /var/lib/apt/lists/* /var/log/* /var/cache/debconf/*-old /var/cache/ldconfig/aux-cache \
 && groupadd --gid 65532 nonroot \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin nonroot \
 && install -d -o 65532 -g 65532 -m 0700 /var/spool/roomrec
COPY --from=build /src/target/release/roomrec-worker /usr/local/bin/
# The pod runs with a read-only root: the worker writes only to its spool volume
# (ROOMREC_SPOOL_DIR, /var/spool/roomrec) and ffmpeg's scratch, if any, goes to the /tmp volume.
ENV TMPDIR=/tmp
USER 65532:65532
# No CMD: the operator's pods pass `record` and the job's settings as ROOMREC_* variables.
ENTRYPOINT ["/usr/local/bin/roomrec-worker"]
