'use strict';
/** Measurement helpers: a fixed-size latency histogram, CPU time, /proc readings. */

const fs = require('node:fs');
const { execFileSync } = require('node:child_process');

/**
 * Latency histogram with 0.1 ms bins up to `maxMs`; O(1) memory whatever the
 * number of samples, exact percentiles at the bin resolution.
 */
class Histogram {
  constructor(maxMs = 120_000) {
    this.binsPerMs = 10;
    this.bins = new Uint32Array(maxMs * this.binsPerMs + 1);
    this.count = 0;
    this.sum = 0;
    this.max = -Infinity;
    this.min = Infinity;
    this.negative = 0;
  }

  record(ms) {
    if (ms < 0) {
      this.negative += 1;
      ms = 0;
    }
    let bin = Math.floor(ms * this.binsPerMs);
    if (bin >= this.bins.length) bin = this.bins.length - 1;
    this.bins[bin] += 1;
    this.count += 1;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
    if (ms < this.min) this.min = ms;
  }

  percentile(p) {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (let bin = 0; bin < this.bins.length; bin += 1) {
      seen += this.bins[bin];
      if (seen >= rank) return round((bin + 1) / this.binsPerMs, 1);
    }
    return round(this.max, 1);
  }

  summary() {
    if (this.count === 0) return { count: 0 };
    return {
      count: this.count,
      min: round(this.min, 1),
      mean: round(this.sum / this.count, 2),
      p50: this.percentile(50),
      p90: this.percentile(90),
      p99: this.percentile(99),
      max: round(this.max, 1),
      negative: this.negative,
    };
  }
}

function round(value, digits) {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** CPU time (ms) this process used since `since` (a process.cpuUsage() value). */
function cpuMsSince(since) {
  const d = process.cpuUsage(since);
  return { userMs: round(d.user / 1000, 1), systemMs: round(d.system / 1000, 1), totalMs: round((d.user + d.system) / 1000, 1) };
}

let clockTicks = null;
function ticksPerSecond() {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 2000 }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/**
 * RSS (bytes) and CPU time (ms, user + system, all threads) of another
 * process, from /proc. Null when the process is gone or /proc is unreadable.
 */
function procSample(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // The command name (field 2) may hold spaces; fields after it are plain.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    const status = fs.readFileSync(`/proc/${pid}/status`, 'latin1');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return {
      cpuMs: ((utime + stime) * 1000) / ticksPerSecond(),
      rssBytes: m ? Number(m[1]) * 1024 : null,
      at: Date.now(),
    };
  } catch {
    return null;
  }
}

/**
 * What a server spent between two procSample() readings; with `units` > 0,
 * also its CPU per unit of work, in µs, under the key `perUnitKey`.
 */
function procDelta(before, after, units, perUnitKey) {
  if (before === null || after === null) return null;
  const cpuMs = round(after.cpuMs - before.cpuMs, 1);
  const wallMs = after.at - before.at;
  const out = { cpuMs, wallMs, pctOfOneCore: wallMs > 0 ? round((cpuMs * 100) / wallMs, 1) : null, rssBytes: after.rssBytes };
  if (units > 0) out[perUnitKey] = round((cpuMs * 1000) / units, 2);
  return out;
}

module.exports = { Histogram, cpuMsSince, procSample, procDelta, round };
