# mcp-server-time (from PyPI) as a container: the echo image with another default command.
FROM mcp-gateway-test/echo:1
CMD ["python3", "-m", "mcp_server_time"]
ARG CONTENT_HASH=unknown
LABEL mcp-gateway-test.image="1" mcp-gateway-test.hash="${CONTENT_HASH}"
