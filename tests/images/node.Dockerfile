# Test image for Node MCP servers: Debian bookworm (the debootstrapped base, which already has the
# libstdc++6 and libgcc-s1 the node binary needs), Node 22 from the npm registry (scripts/node-env),
# the npm packages of tests/images/node-package.json (the reference server-everything and the SDK),
# and tests/servers/*.mjs. scripts/test-env assembles the context; built with --network=none.
FROM mcp-gateway-test/base:bookworm
COPY node /usr/local/bin/node
COPY node_modules/ /app/node_modules/
COPY servers/ /app/
WORKDIR /app
USER 65534:65534
# The reference server over stdio; `node /app/node_probe.mjs` is our own probe server.
CMD ["node", "/app/node_modules/@modelcontextprotocol/server-everything/dist/index.js", "stdio"]
ARG CONTENT_HASH=unknown
LABEL mcp-gateway-test.image="1" mcp-gateway-test.hash="${CONTENT_HASH}"
