-- wrk script: tools/call with a unique JSON-RPC id per request, on one reused MCP session.
--
--   MCP_SESSION_ID=$(python -m bench.load --url http://127.0.0.1:8080/mcp --open-session) \
--     wrk -t2 -c10 -d10s -s bench/wrk_call.lua http://127.0.0.1:8080/mcp
--
-- Env: MCP_SESSION_ID (required for a stateful server), MCP_BENCH_TOOL (default fast__echo),
-- MCP_BENCH_ARGS (JSON, default {"text":"hello"}), MCP_PROTOCOL_VERSION (default 2025-11-25; 2026-07-28 or
-- later sends stateless requests: no session, the _meta envelope, Mcp-Method and Mcp-Name),
-- MCP_AUTHORIZATION (an Authorization header value, e.g. "Bearer <key>": from the environment, never argv).
-- The path is the URL's. Ids are "<thread><9-digit counter>", unique across threads. Each answer
-- is checked: HTTP 200, a "result", no "isError":true, and an id this thread sent and has not seen
-- answered yet (a fixed id lets some servers misroute replies while wrk reports no error).

local threads = {}
local next_tid = 1

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  local sid = os.getenv("MCP_SESSION_ID")
  local tool = os.getenv("MCP_BENCH_TOOL") or "fast__echo"
  local arguments = os.getenv("MCP_BENCH_ARGS") or '{"text":"hello"}'
  headers = {
    ["Content-Type"] = "application/json",
    ["Accept"] = "application/json, text/event-stream",
    ["MCP-Protocol-Version"] = os.getenv("MCP_PROTOCOL_VERSION") or "2025-11-25",
  }
  if sid and sid ~= "" then
    headers["Mcp-Session-Id"] = sid
  end
  local authorization = os.getenv("MCP_AUTHORIZATION")
  if authorization and authorization ~= "" then
    headers["Authorization"] = authorization
  end
  local version = headers["MCP-Protocol-Version"]
  local meta = ""
  if version >= "2026-07-28" then
    -- The stateless era: no session; the envelope in params._meta, the method and name in headers too.
    headers["Mcp-Method"] = "tools/call"
    headers["Mcp-Name"] = tool
    meta = ',"_meta":{"io.modelcontextprotocol/protocolVersion":"' .. version .. '",'
      .. '"io.modelcontextprotocol/clientCapabilities":{},'
      .. '"io.modelcontextprotocol/clientInfo":{"name":"wrk","version":"1"}}'
  end
  head = '{"jsonrpc":"2.0","id":'
  tail = ',"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. arguments .. meta .. '}}'
  path = wrk.path
  n, bad, sample = 0, 0, nil
  pending = {}
end

function request()
  n = n + 1
  local id = string.format("%d%09d", tid, n)
  pending[id] = true
  return wrk.format("POST", path, headers, head .. id .. tail)
end

function response(status, hdrs, body)
  local id = string.match(body, '"id":%s*(%d+)')
  local ok = status == 200 and id ~= nil and pending[id]
    and string.find(body, '"result"', 1, true) ~= nil
    and string.find(body, '"isError":%s*true') == nil
  if id then
    pending[id] = nil
  end
  if not ok then
    bad = bad + 1
    if sample == nil then
      sample = status .. " " .. string.sub(body, 1, 200)
    end
  end
end

function done(summary, latency, requests)
  local total_bad, total_sent = 0, 0
  for _, thread in ipairs(threads) do
    total_bad = total_bad + (thread:get("bad") or 0)
    total_sent = total_sent + (thread:get("n") or 0)
    local s = thread:get("sample")
    if s then
      io.write("sample bad answer: ", s, "\n")
    end
  end
  io.write(string.format("mcp: %d requests sent, %d bad answers (HTTP errors: %d, timeouts: %d)\n",
    total_sent, total_bad, summary.errors.status, summary.errors.timeout))
end
