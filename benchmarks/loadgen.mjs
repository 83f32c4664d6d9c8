// Fan-out load generator: N raw-TCP WebSocket clients with their own handshake and frame parser
// (so that the client side stays cheap), then a burst phase (M back-to-back broadcasts) and a paced
// phase (a fixed offered rate of deliveries per second), each started with GET /_bench/start.
// A health-check prober (a separate process) runs during each phase. Every wait is bounded.
//
// With "socketio": true the clients speak Socket.IO (Engine.IO 4) on /socket.io/ instead, on the same
// WebSocket code: after the 101 they read Engine.IO's open packet `0{...}`, send `40` (connect to
// the namespace /), count as connected once `40{...}` comes back, answer Engine.IO's pings `2` with
// `3`, and take the broadcasts from `42["integers",{"id":N,"data":{"n":k,"t":<us>}}]`.
//
// Usage: node loadgen.mjs '{"port":3000,"n":1000,"burst":300,"pacedRate":20000,"serverPid":123}'
// Prints one JSON object (the same fields as ../shared/bench/client.js, plus a few).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

const cfg = {
  host: '127.0.0.1',
  port: 3000,
  n: 100, // clients
  conc: 50, // handshakes in flight
  burst: 200, // broadcasts in the burst phase (0: none)
  pacedRate: 20000, // offered deliveries/s in the paced phase (0: none)
  pacedSecs: 3,
  holdSecs: 0, // with no phases: how long to hold the idle connections before counting them
  serverPid: 0,
  prober: null, // {"cmd": [...argv, the port and an output file are appended], "outPrefix": "..."}
  connectTimeoutS: 120,
  phaseTimeoutS: 90,
  idleTimeoutS: 8, // a phase ends early when nothing arrived for this long
  path: '/_ws/bench',
  channels: 0, // >0: client i subscribes to chat/bench-<i % channels>, broadcasts go round-robin
  socketio: false, // true: Socket.IO's clients on /socket.io/ (the path is then ignored)
  ...JSON.parse(process.argv[2] || '{}'),
};
const SOCKETIO_PATH = '/socket.io/?EIO=4&transport=websocket';

const TICKS_PER_S = 100; // USER_HZ on Linux
const T_KEY = Buffer.from('"t":');
const nowUs = () => (performance.timeOrigin + performance.now()) * 1000;

/** Resident set size (KB) and CPU seconds (user + system, all threads) of the server process. */
function serverStats() {
  if (!cfg.serverPid) return { rssKb: 0, cpuS: 0 };
  try {
    const status = readFileSync(`/proc/${cfg.serverPid}/status`, 'utf8');
    const stat = readFileSync(`/proc/${cfg.serverPid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return {
      rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)[1]),
      cpuS: (Number(fields[11]) + Number(fields[12])) / TICKS_PER_S,
    };
  } catch {
    return { rssKb: 0, cpuS: 0 };
  }
}

/** Latencies and counts of the phase in progress (null between phases). */
let phase = null;
let closesFromServer = 0;

class Client {
  constructor() {
    this.handshaking = true;
    // Socket.IO only: 'open' (waiting for Engine.IO's 0{...}), 'connect' (for Socket.IO's 40{...}),
    // then 'joined'. A raw client is 'joined' once its handshake is done.
    this.sio = 'open';
    this.pending = null;
    this.open = false;
    this.socket = null;
  }

  /** Open the connection and complete the handshake; resolves to null or an error name. */
  connect(path) {
    return new Promise((resolve) => {
      const key = randomBytes(16).toString('base64');
      const socket = net.connect({ host: cfg.host, port: cfg.port });
      this.socket = socket;
      socket.setNoDelay(true);
      let settled = false;
      this.settle = (error) => {
        if (!settled) {
          settled = true;
          resolve(error);
        }
      };
      socket.on('connect', () => {
        socket.write(
          `GET ${path} HTTP/1.1\r\nHost: ${cfg.host}:${cfg.port}\r\nUpgrade: websocket\r\n` +
            `Connection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
        );
      });
      socket.on('data', (data) => this.onData(data));
      socket.on('error', (error) => {
        this.open = false;
        this.settle(error.code || String(error));
      });
      socket.on('close', () => {
        this.open = false;
        this.settle('closed');
      });
    });
  }

  onData(data) {
    const t = nowUs();
    let buf = this.pending ? Buffer.concat([this.pending, data]) : data;
    this.pending = null;
    if (this.handshaking) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) {
        this.pending = buf;
        return;
      }
      const status = buf.toString('latin1', 0, buf.indexOf('\r\n'));
      if (!status.startsWith('HTTP/1.1 101')) {
        this.settle(status);
        this.socket.destroy();
        return;
      }
      this.handshaking = false;
      this.open = true;
      if (!cfg.socketio) this.settle(null); // Socket.IO's: once connected to the namespace
      buf = buf.subarray(end + 4);
    }
    let off = 0;
    while (buf.length - off >= 2) {
      const opcode = buf[off] & 0x0f;
      let len = buf[off + 1] & 0x7f;
      let head = 2;
      if (len === 126) {
        if (buf.length - off < 4) break;
        len = buf.readUInt16BE(off + 2);
        head = 4;
      } else if (len === 127) {
        if (buf.length - off < 10) break;
        len = Number(buf.readBigUInt64BE(off + 2));
        head = 10;
      }
      if (buf.length - off < head + len) break;
      const start = off + head;
      const end = start + len;
      if (opcode === 1 && cfg.socketio) this.onSocketIO(buf, start, end, t);
      else if (opcode === 1 || opcode === 2) this.onMessage(buf, start, end, t);
      else if (opcode === 9) this.pong(buf.subarray(start, end));
      else if (opcode === 8) {
        closesFromServer += 1;
        this.open = false;
      }
      off = end;
    }
    if (off < buf.length) this.pending = buf.subarray(off);
  }

  /** One of Engine.IO's packets: the handshake, a ping, or (42) one of Socket.IO's events. */
  onSocketIO(buf, start, end, t) {
    const type = buf[start];
    if (type === 0x34 && buf[start + 1] === 0x32) this.onMessage(buf, start, end, t); // 42[...]
    else if (type === 0x32) this.sendText('3'); // Engine.IO's ping: pong
    else if (this.sio === 'open' && type === 0x30) {
      this.sio = 'connect';
      this.sendText('40'); // connect to the namespace /; no auth: no last_id to replay from
    } else if (this.sio === 'connect' && type === 0x34) {
      const ok = buf[start + 1] === 0x30; // 40{"sid":...}; 44{...} is connect_error
      this.sio = ok ? 'joined' : 'refused';
      if (ok) this.settle(null);
      else {
        this.settle(`connect_error ${buf.toString('utf8', start, Math.min(end, start + 80))}`);
        this.socket.destroy();
      }
    }
  }

  onMessage(buf, start, end, t) {
    if (!phase) return;
    phase.delivered += 1;
    phase.tLast = t;
    const at = buf.indexOf(T_KEY, start);
    if (at < 0 || at >= end) return;
    let sent = 0;
    for (let i = at + T_KEY.length; i < end; i += 1) {
      const digit = buf[i] - 48;
      if (digit < 0 || digit > 9) break;
      sent = sent * 10 + digit;
    }
    if (phase.count < phase.latencies.length) phase.latencies[phase.count++] = t - sent;
  }

  /** Send one text frame (masked with a zero mask, which leaves the payload as it is). */
  sendText(text) {
    const payload = Buffer.from(text);
    const head =
      payload.length < 126
        ? Buffer.from([0x81, 0x80 | payload.length])
        : Buffer.from([0x81, 0x80 | 126, payload.length >> 8, payload.length & 0xff]);
    this.socket.write(Buffer.concat([head, Buffer.alloc(4), payload]));
  }

  pong(payload) {
    if (payload.length > 125) return;
    // Client frames are masked; a zero mask leaves the payload as it is.
    this.socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | payload.length, 0, 0, 0, 0]), payload]));
  }
}

function httpGet(path) {
  return new Promise((resolve) => {
    const req = http.get({ host: cfg.host, port: cfg.port, path, agent: false, timeout: 5000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
    req.on('timeout', () => req.destroy());
  });
}

/** Percentiles (ms) of the first `count` latencies (us). */
function percentiles(latencies, count, qs) {
  const sorted = latencies.subarray(0, count).sort();
  return qs.map((q) => (count ? sorted[Math.min(count - 1, Math.floor(q * count))] / 1000 : null));
}

async function withProber(tag, body) {
  if (!cfg.prober) return [await body(), null];
  const out = `${cfg.prober.outPrefix}-${tag}.json`;
  const child = spawn(cfg.prober.cmd[0], [...cfg.prober.cmd.slice(1), String(cfg.port), out], {
    stdio: 'ignore',
  });
  const exited = new Promise((resolve) => child.on('exit', resolve));
  await sleep(300); // the prober's first probes see an idle server
  const result = await body();
  child.kill('SIGINT');
  await Promise.race([exited, sleep(5000)]);
  try {
    return [result, JSON.parse(readFileSync(out, 'utf8'))];
  } catch (error) {
    return [result, { error: String(error) }];
  }
}

async function runPhase(name, count, intervalMs, expected) {
  const [result, healthcheck] = await withProber(name, async () => {
    phase = { latencies: new Float64Array(Math.min(4e6, expected)), count: 0, delivered: 0, tLast: 0 };
    let peakRssKb = serverStats().rssKb;
    const rssTimer = setInterval(() => {
      peakRssKb = Math.max(peakRssKb, serverStats().rssKb);
    }, 250);
    const before = serverStats();
    const t0 = nowUs();
    const channels = cfg.channels ? `&channels=${cfg.channels}` : '';
    const trigger = await httpGet(`/_bench/start?count=${count}&interval_ms=${intervalMs}${channels}`);
    const deadline = performance.now() + cfg.phaseTimeoutS * 1000;
    let seen = -1;
    let lastChange = performance.now();
    while (phase.delivered < expected && performance.now() < deadline) {
      await sleep(50);
      if (phase.delivered !== seen) {
        seen = phase.delivered;
        lastChange = performance.now();
      } else if (performance.now() - lastChange > cfg.idleTimeoutS * 1000) break;
    }
    const phaseWall = (nowUs() - t0) / 1e6;
    const serverCpuS = serverStats().cpuS - before.cpuS;
    clearInterval(rssTimer);
    const done = phase;
    phase = null;
    const seconds = (done.tLast - t0) / 1e6;
    const [p50, p95, p99, pmax] = percentiles(done.latencies, done.count, [0.5, 0.95, 0.99, 1]);
    return {
      phase: name,
      trigger,
      count,
      intervalMs,
      expected,
      delivered: done.delivered,
      complete: done.delivered >= expected,
      seconds,
      deliveriesPerSec: seconds > 0 ? done.delivered / seconds : null,
      latP50ms: p50,
      latP95ms: p95,
      latP99ms: p99,
      latMaxMs: pmax,
      serverCpuPct: (100 * serverCpuS) / phaseWall,
      phaseWall,
      serverCpuUsPerDelivery: done.delivered ? (serverCpuS * 1e6) / done.delivered : null,
      rssBeforeKb: before.rssKb,
      peakRssKb: Math.max(peakRssKb, serverStats().rssKb),
    };
  });
  return { ...result, healthcheck };
}

async function connectAll(clients) {
  let next = 0;
  let ok = 0;
  const errors = {};
  const deadline = performance.now() + cfg.connectTimeoutS * 1000;
  const worker = async () => {
    while (next < clients.length && performance.now() < deadline) {
      const error = await clients[next++].connect(cfg.socketio ? SOCKETIO_PATH : cfg.path);
      if (error === null) ok += 1;
      else errors[error] = (errors[error] || 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: cfg.conc }, worker));
  return { ok, errors };
}

async function main() {
  const res = { cfg: { ...cfg, prober: undefined } };
  const hardStop = setTimeout(() => {
    console.log(JSON.stringify({ ...res, error: 'hard timeout' }));
    process.exit(3);
  }, 400e3);
  const refused = new Client();
  res.refusedOtherPath = (await refused.connect('/not-ws/')) !== null;
  refused.socket.destroy();

  res.rss0Kb = serverStats().rssKb;
  const clients = Array.from({ length: cfg.n }, () => new Client());
  const t0 = performance.now();
  const { ok, errors } = await connectAll(clients);
  res.connected = ok;
  res.connectErrors = errors;
  res.connectSeconds = (performance.now() - t0) / 1000;
  res.connectPerSec = ok / res.connectSeconds;
  if (cfg.channels > 0) {
    clients.forEach((c, i) => {
      const channel = `chat/bench-${i % cfg.channels}`;
      if (!c.open) return;
      if (cfg.socketio) c.sendText(`42${JSON.stringify(['subscribe', { channel }])}`);
      else c.sendText(JSON.stringify({ type: 'subscribe', channel }));
    });
  }
  await sleep(1500);
  res.rss1Kb = serverStats().rssKb;
  res.rssPerConnKb = ok ? (res.rss1Kb - res.rss0Kb) / ok : null;
  res.phases = [];
  const live = clients.filter((c) => c.open).length;
  const reach = cfg.channels > 0 ? live / cfg.channels : live; // clients per broadcast
  if (cfg.burst > 0 && live > 0) {
    res.phases.push(await runPhase('burst', cfg.burst, 0, Math.round(cfg.burst * reach)));
  }
  if (cfg.pacedRate > 0 && live > 0) {
    const intervalMs = Math.max(1, (reach / cfg.pacedRate) * 1000);
    const count = Math.max(5, Math.round((cfg.pacedSecs * 1000) / intervalMs));
    await sleep(500);
    res.phases.push(await runPhase('paced', count, intervalMs, Math.round(count * reach)));
  }
  if (cfg.holdSecs > 0) await sleep(cfg.holdSecs * 1000);
  res.closesFromServer = closesFromServer;
  res.openAtEnd = clients.filter((c) => c.open).length;
  for (const c of clients) c.socket?.destroy();
  clearTimeout(hardStop);
  console.log(JSON.stringify(res));
  setTimeout(() => process.exit(0), 200);
}

main();
