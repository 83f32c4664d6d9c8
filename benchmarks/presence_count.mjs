// Counted presence under load: N raw-TCP WebSocket clients subscribe to one counted channel across
// the app processes listening on `ports` (round-robin), then the room changes and every subscriber
// must see the new count. Measured: how long after a change every subscriber has the right count,
// and the presence traffic each subscriber gets (frames and bytes per second) while the room churns.
// Every wait is bounded.
//
// Usage: node presence_count.mjs '{"ports":[3001,3002],"n":10000,"change":100,"churnSecs":10}'
// Prints one JSON object.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';

const cfg = {
  host: '127.0.0.1',
  ports: [3000],
  n: 1000, // subscribers
  conc: 100, // handshakes in flight
  channel: 'live/bench',
  change: 100, // subscribers that leave, then come back, in each measured change
  churnSecs: 10, // a phase in which `churnPerSec` subscribers leave and others come each second
  churnPerSec: 20,
  timeoutS: 60, // longest wait for any one step
  ...JSON.parse(process.argv[2] || '{}'),
};
const KEY = randomBytes(16).toString('base64');
const now = () => performance.now();

function frame(opcode, payload) {
  const mask = randomBytes(4);
  const data = Buffer.from(payload);
  const head = data.length < 126 ? Buffer.from([0x80 | opcode, 0x80 | data.length])
    : Buffer.from([0x80 | opcode, 0x80 | 126, data.length >> 8, data.length & 0xff]);
  for (let i = 0; i < data.length; i++) data[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, data]);
}

class Client {
  constructor(port) {
    this.port = port;
    this.count = null; // the last count received
    this.countFrames = 0;
    this.countBytes = 0;
    this.buffer = Buffer.alloc(0);
    this.closed = false;
  }

  connect() {
    return new Promise((resolve, reject) => {
      const sock = net.connect(this.port, cfg.host);
      this.sock = sock;
      let upgraded = false;
      const timer = setTimeout(() => reject(new Error('handshake timeout')), cfg.timeoutS * 1000);
      sock.on('connect', () => sock.write(
        `GET /_ws/bench HTTP/1.1\r\nHost: ${cfg.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n`));
      sock.on('data', (chunk) => {
        this.buffer = Buffer.concat([this.buffer, chunk]);
        if (!upgraded) {
          const end = this.buffer.indexOf('\r\n\r\n');
          if (end < 0) return;
          const status = this.buffer.subarray(0, 12).toString();
          this.buffer = this.buffer.subarray(end + 4);
          clearTimeout(timer);
          if (!status.includes('101')) return reject(new Error(status));
          upgraded = true;
          sock.write(frame(1, JSON.stringify({ type: 'subscribe', channel: cfg.channel })));
          resolve();
        }
        this.read();
      });
      sock.on('error', (error) => { clearTimeout(timer); this.closed = true; reject(error); });
      sock.on('close', () => { this.closed = true; });
    });
  }

  read() {
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) return;
      let length = b[1] & 0x7f;
      let offset = 2;
      if (length === 126) {
        if (b.length < 4) return;
        length = b.readUInt16BE(2);
        offset = 4;
      } else if (length === 127) {
        if (b.length < 10) return;
        length = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      if (b.length < offset + length) return;
      const opcode = b[0] & 0x0f;
      const payload = b.subarray(offset, offset + length);
      this.buffer = b.subarray(offset + length);
      if (opcode === 9) this.sock.write(frame(10, payload));
      else if (opcode === 1 && payload.includes('"count":')) {
        const message = JSON.parse(payload);
        if (message.type === 'presence' && message.channel === cfg.channel) {
          this.count = message.count;
          this.countFrames += 1;
          this.countBytes += length + offset;
        }
      }
    }
  }

  leave() {
    this.closed = true;
    this.sock.destroy();
  }
}

async function connectAll(clients) {
  let next = 0;
  let failed = 0;
  const worker = async () => {
    while (next < clients.length) {
      const client = clients[next++];
      try {
        await client.connect();
      } catch {
        failed += 1;
      }
    }
  };
  await Promise.all(Array.from({ length: cfg.conc }, worker));
  return failed;
}

/** Milliseconds until every open client has `expected` (null if the timeout came first). */
async function settle(clients, expected, from) {
  const deadline = from + cfg.timeoutS * 1000;
  while (now() < deadline) {
    if (clients.every((c) => c.closed || c.count === expected)) return now() - from;
    await sleep(10);
  }
  return null;
}

const made = (count, start = 0) =>
  Array.from({ length: count }, (_, i) => new Client(cfg.ports[(start + i) % cfg.ports.length]));

const result = { n: cfg.n, ports: cfg.ports.length, change: cfg.change };
let clients = made(cfg.n);
let started = now();
result.failedConnects = await connectAll(clients);
result.connectSeconds = (now() - started) / 1000;
let open = clients.filter((c) => !c.closed);
result.subscribers = open.length;
started = now();
result.settleAllMs = await settle(open, open.length, started);

// A change: `change` subscribers leave at once (spread over every process), then as many come.
const leaving = open.filter((_, i) => i % Math.floor(open.length / cfg.change) === 0).slice(0, cfg.change);
for (const c of leaving) c.leave();
open = open.filter((c) => !c.closed);
result.afterLeaveMs = await settle(open, open.length, now());
const coming = made(cfg.change);
started = now();
await connectAll(coming);
open = [...open, ...coming.filter((c) => !c.closed)];
result.afterJoinMs = await settle(open, open.length, started);

// Churn: the count changes every second (some leave, then as many come back, in turn); the
// presence traffic per subscriber stays bounded whatever the room's size.
for (const c of open) {
  c.countFrames = 0;
  c.countBytes = 0;
}
const churning = open.slice(0, cfg.churnPerSec);
const steady = open.slice(cfg.churnPerSec);
let comers = [];
started = now();
for (let second = 0; second < cfg.churnSecs; second++) {
  const tick = now();
  if (second % 2 === 0) {
    for (const c of [...churning, ...comers]) if (!c.closed) c.leave();
  } else {
    comers = made(cfg.churnPerSec, second);
    await connectAll(comers);
  }
  await sleep(Math.max(0, 1000 - (now() - tick)));
}
const churned = (now() - started) / 1000;
const frames = steady.map((c) => c.countFrames / churned);
result.churnSeconds = churned;
result.countFramesPerSubscriberPerS = {
  mean: frames.reduce((a, b) => a + b, 0) / frames.length,
  max: Math.max(...frames),
};
result.countBytesPerSubscriberPerS =
  steady.reduce((a, c) => a + c.countBytes, 0) / steady.length / churned;
console.log(JSON.stringify(result));
process.exit(0);
