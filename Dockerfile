# Multi-stage build: compile in the Rust image, run as a non-root user in a slim runtime.
FROM rust:1.95-slim-bookworm AS build
# make: the allocator's C library (jemalloc) builds with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends make=4.3-4.1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY migrations ./migrations
COPY config ./config
COPY benches ./benches
RUN cargo build --release --locked --bin livechain

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates=20230311+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --create-home --home-dir /var/lib/livechain livechain
COPY --from=build /src/target/release/livechain /usr/local/bin/livechain
USER 10001
WORKDIR /var/lib/livechain
# The API; bind it to 0.0.0.0 in the mounted config (server.listen) to reach it from outside.
EXPOSE 4000
ENTRYPOINT ["livechain"]
CMD ["run"]
