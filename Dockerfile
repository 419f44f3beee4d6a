# The gateway image. It runs with the host's Docker socket mounted and starts the
# sandboxed MCP servers as sibling containers:
#
#   scripts/build-image                      # prepares build/site, then docker build
#   docker run --rm --init --network host -v /var/run/docker.sock:/var/run/docker.sock \
#       -v $PWD/config:/etc/mcp-gateway:ro mcp-gateway:latest
#
# Python packages are installed on the host into build/site (pip --target, wheels only)
# and copied in, so the build needs no registry and no pip inside the image: BASE can be
# python:3.11-slim-bookworm, or the debootstrapped mcp-gateway-test/base:bookworm used on
# machines without a registry. Both ship Python 3.11.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
COPY build/site /opt/mcp-gateway/site
COPY config /etc/mcp-gateway
ENV PYTHONPATH=/opt/mcp-gateway/site \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="mcp-gateway" \
      org.opencontainers.image.description="One hardened MCP endpoint in front of many MCP servers"
EXPOSE 8080
# With --network host the example config's 127.0.0.1 is the host's loopback. To publish the port
# instead (-p), mount a config that listens on 0.0.0.0 with auth (api_keys or jwt): beyond
# loopback the gateway refuses to start without it.
ENTRYPOINT ["python3", "-m", "gateway.cli"]
CMD ["run", "--config", "/etc/mcp-gateway/example.yaml"]
