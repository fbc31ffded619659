# syntax=docker/dockerfile:1
# agora-node container: the build stage makes dist/agora-node from source (bun from npm, emscripten from apt);
# the final stage is distroless (glibc, no shell) and runs as non-root.
#   docker build -t agora/node .
#   docker run -d -p 7001:7001 -p 8080:8080 -p 9090:9090 -v agora-data:/var/lib/agora \
#     -v ./dashboard-token:/run/secrets/agora_dashboard_token:ro agora/node

FROM debian:bookworm-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates npm emscripten gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not re-install them.
COPY package.json bun.lock bunfig.toml tsconfig.json ./
COPY patches ./patches
RUN npm install --prefix .tools --no-save --no-audit --no-fund @oven/bun-linux-x64@1.4.5 \
 && .tools/node_modules/@oven/bun-linux-x64/bin/bun install --frozen-lockfile
COPY wasm ./wasm
COPY scripts ./scripts
COPY src ./src
COPY config ./config
RUN .tools/node_modules/@oven/bun-linux-x64/bin/bun scripts/build.ts \
 && ./dist/agora-node --version \
 && mkdir -p /rootfs/var/lib/agora /rootfs/etc/agora \
 && cp config/node.toml /rootfs/etc/agora/node.toml

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/dist/agora-node /usr/local/bin/agora-node
COPY --from=build /rootfs/etc/agora /etc/agora
COPY --from=build --chown=65532:65532 /rootfs/var/lib/agora /var/lib/agora
# Settings by environment (AGORA_<SECTION>_<KEY>); these make the container reachable from its host.
# The dashboard leaves loopback here, so it requires an admin token: mount one at the token file path.
ENV AGORA_NODE_DATA_DIR=/var/lib/agora \
    AGORA_NODE_LISTEN_ADDR=0.0.0.0 \
    AGORA_DASHBOARD_LISTEN_ADDR=0.0.0.0 \
    AGORA_DASHBOARD_AUTH_TOKEN_FILE=/run/secrets/agora_dashboard_token \
    AGORA_METRICS_LISTEN_ADDR=0.0.0.0 \
    AGORA_LOGGING_FORMAT=json
USER nonroot:nonroot
VOLUME ["/var/lib/agora"]
# P2P (libp2p TCP), dashboard/API, Prometheus metrics
EXPOSE 7001/tcp 8080/tcp 9090/tcp
STOPSIGNAL SIGTERM
# No shell or curl in distroless: the binary probes its own /health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["/usr/local/bin/agora-node", "health", "--config", "/etc/agora/node.toml"]
ENTRYPOINT ["/usr/local/bin/agora-node"]
CMD ["start", "--config", "/etc/agora/node.toml"]
