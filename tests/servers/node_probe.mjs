// A stdio MCP server written with the official TypeScript SDK (@modelcontextprotocol/sdk), for the
// sandbox tests: does Node work in the hardened container (strict seccomp profile included)?
// Runs in the Node test image (`node /app/node_probe.mjs`). Tools:
//   echo(text)  returns text
//   features()  JSON {feature: result} for what Node servers commonly use: worker threads, child
//               processes (glibc's clone3 -> clone fallback), fs and fs.watch (inotify), crypto,
//               zlib, WebAssembly (JIT memory), timers, network interfaces (netlink), a TCP socket
//               on loopback, DNS lookup of localhost; a failure reads "error: <message>".
import { Worker } from "node:worker_threads";
import { execFileSync } from "node:child_process";
import crypto from "node:crypto";
import dns from "node:dns/promises";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import zlib from "node:zlib";

import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";

// (module (func (export "add") (param i32 i32) (result i32) local.get 0 local.get 1 i32.add))
const ADD_WASM = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 7, 1, 96, 2, 127, 127, 1, 127, 3, 2, 1, 0, 7, 7, 1, 3, 97, 100, 100, 0,
  0, 10, 9, 1, 7, 0, 32, 0, 32, 1, 106, 11,
]);

const checks = {
  worker: () =>
    new Promise((resolve, reject) => {
      const w = new Worker("require('node:worker_threads').parentPort.postMessage(6 * 7)", { eval: true });
      w.once("message", resolve);
      w.once("error", reject);
    }),
  child_process: () => execFileSync("/bin/echo", ["spawned"]).toString().trim(),
  shell: () => execFileSync("sh", ["-c", "echo $((20 + 22))"]).toString().trim(),
  fs: () => {
    const path = `/tmp/node-probe-${process.pid}`;
    fs.writeFileSync(path, "written");
    const text = fs.readFileSync(path, "utf8");
    fs.unlinkSync(path);
    return text;
  },
  fs_watch: () => {
    fs.watch("/tmp").close();
    return "ok";
  },
  crypto: () => crypto.createHash("sha256").update("mcp").digest("hex").slice(0, 12),
  random: () => crypto.randomBytes(16).length,
  zlib: () => zlib.gunzipSync(zlib.gzipSync("squeezed")).toString(),
  wasm: async () => (await WebAssembly.instantiate(ADD_WASM)).instance.exports.add(40, 2),
  timer: () => new Promise((resolve) => setTimeout(() => resolve("ok"), 5)),
  interfaces: () => Object.keys(os.networkInterfaces()),
  tcp_loopback: () =>
    new Promise((resolve, reject) => {
      const srv = net.createServer((sock) => sock.end("pong"));
      srv.listen(0, "127.0.0.1", () => {
        const client = net.connect(srv.address().port, "127.0.0.1");
        let got = "";
        client.on("data", (d) => (got += d));
        client.on("end", () => srv.close(() => resolve(got)));
        client.on("error", reject);
      });
    }),
  dns_localhost: async () => (await dns.lookup("localhost")).address,
};

async function features() {
  const out = {};
  for (const [name, check] of Object.entries(checks)) {
    try {
      out[name] = await check();
    } catch (err) {
      out[name] = `error: ${err && err.message ? err.message : err}`;
    }
  }
  return out;
}

const server = new McpServer({ name: "node-probe", version: "1.0.0" });
server.registerTool(
  "echo",
  { description: "Return the text unchanged.", inputSchema: { text: z.string() } },
  async ({ text }) => ({ content: [{ type: "text", text }] }),
);
server.registerTool(
  "features",
  { description: "Try what Node servers commonly use; JSON {feature: result}." },
  async () => ({ content: [{ type: "text", text: JSON.stringify(await features()) }] }),
);
// Protocol bytes own stdout; this goes to stderr (the gateway's log).
console.error(`node_probe: ready (node ${process.version}, ${process.arch})`);
await server.connect(new StdioServerTransport());
