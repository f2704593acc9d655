'use strict';
// HTTP keep-alive load: `--connections` sockets each sending GET requests back to
// back for `--duration` seconds (bounded also by `--max-requests`). Prints one JSON
// object: requests/s, status counts, latency percentiles, and this process's CPU.
const http = require('http');

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const url = new URL(arg('url'));
if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
  console.error('loopback targets only');
  process.exit(2);
}
const connections = Number(arg('connections', '32'));
const duration = Number(arg('duration', '10')) * 1000;
const warmup = Number(arg('warmup', '2')) * 1000;
const maxRequests = Number(arg('max-requests', '2000000'));
const headers = {};
const bearer = arg('bearer');
if (bearer) headers.authorization = `Bearer ${bearer}`;

const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
const latencies = [];
const statuses = {};
let done = 0;
let measuring = false;
let stopAt = 0;
let started = 0;
let cpuStart = null;

function one(resolve) {
  const t0 = process.hrtime.bigint();
  const req = http.request(
    { host: url.hostname, port: url.port, path: url.pathname + url.search, agent, headers },
    (res) => {
      res.resume();
      res.on('end', () => {
        if (measuring) {
          done += 1;
          statuses[res.statusCode] = (statuses[res.statusCode] || 0) + 1;
          if (latencies.length < 200000) latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
        }
        resolve();
      });
    },
  );
  req.on('error', () => {
    statuses.error = (statuses.error || 0) + 1;
    resolve();
  });
  req.end();
}

async function worker() {
  while (Date.now() < stopAt && done < maxRequests) {
    await new Promise(one);
  }
}

async function main() {
  const begin = Date.now();
  stopAt = begin + warmup + duration;
  setTimeout(() => {
    measuring = true;
    started = Date.now();
    cpuStart = process.cpuUsage();
  }, warmup);
  await Promise.all(Array.from({ length: connections }, worker));
  const elapsed = (Date.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuStart);
  latencies.sort((a, b) => a - b);
  const pct = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] : null);
  console.log(JSON.stringify({
    mode: 'http',
    connections,
    seconds: elapsed,
    requests: done,
    requestsPerSecond: done / elapsed,
    statuses,
    latencyMs: { p50: pct(0.5), p90: pct(0.9), p99: pct(0.99) },
    loadgenCpuSeconds: (cpu.user + cpu.system) / 1e6,
  }));
  agent.destroy();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
