# The one buildstats binary; every role is a subcommand (see docker-compose.yml, k8s/).
# Migrations and Avro schemas are compiled in: the image needs no files beside the binary.
#
#   docker build -t buildstats .
#   docker run --rm buildstats --help

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY schemas schemas
COPY core core
COPY ingest-gateway ingest-gateway
COPY processors processors
COPY query-api query-api
COPY buildstats buildstats
COPY bench bench
RUN cargo build --release --locked -p buildstats \
 && strip target/release/buildstats

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/buildstats /usr/local/bin/buildstats
# No config file in the image: BUILDSTATS_* variables configure every role (mount a file and
# set BUILDSTATS_CONFIG to use one; it is then required).
ENV BUILDSTATS_ENV_FILE=/nonexistent \
    BUILDSTATS_LOG_FORMAT=json
USER 65532:65532
ENTRYPOINT ["buildstats"]
CMD ["--help"]
