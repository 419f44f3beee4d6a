# Test image for the sandbox: Debian bookworm's python3 (from the debootstrapped base image) plus
# the `mcp` SDK and `mcp-server-time`, whose wheels scripts/test-env downloads on the host (deps/),
# and the test servers of tests/servers (servers/). Built with --network=none: nothing is pulled.
FROM mcp-gateway-test/base:bookworm
COPY deps/ /opt/mcp-deps/
COPY servers/ /app/
ENV PYTHONPATH=/app:/opt/mcp-deps \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compile once here with the image's own interpreter: the sandbox's read-only root filesystem
# leaves no place for __pycache__ at run time, and compiling pydantic & co. on every start is slow.
RUN python3 -m compileall -q -j 0 /opt/mcp-deps /app
WORKDIR /app
USER 65534:65534
# `python3 -m probe_server` also serves as the echo server (it has an `echo` tool).
CMD ["python3", "-m", "probe_server"]
ARG CONTENT_HASH=unknown
LABEL mcp-gateway-test.image="1" mcp-gateway-test.hash="${CONTENT_HASH}"
