# syncbridge: multi-stage build, non-root runtime with a health check.
# Deployments point DATABASE_URL at their Postgres (the embedded cluster is
# for development on a machine with the PostgreSQL server binaries).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
RUN cargo build --release --locked --bin syncbridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin syncbridge
COPY --from=build /src/target/release/syncbridge /usr/local/bin/syncbridge
COPY fixtures /usr/share/syncbridge/fixtures
USER syncbridge
ENV SYNCBRIDGE_LISTEN=0.0.0.0:8080 \
    SYNCBRIDGE_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/syncbridge"]
CMD ["serve"]
