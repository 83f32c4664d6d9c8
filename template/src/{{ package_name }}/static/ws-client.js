// ws-client.js: a reconnecting WebSocket client for this app's wire protocol.
//
// A dependency-free ES module (no build step). The platform drops WebSockets without warning on
// every deploy and autoscale event, so this client:
//   - opens the WebSocket transport only (there is no long-polling fallback);
//   - reconnects after any drop with capped exponential backoff and full jitter
//     (delay = random(0, min(cap, base * 2^attempt)); even the first retry waits a random time,
//     so a deploy does not cause a thundering herd); the attempt counter resets after the
//     connection has been stable for `stableAfter` ms;
//   - follows a close-code policy (see CLOSE POLICY below);
//   - reconnects at once when the browser comes back online or the tab becomes visible while it
//     is waiting to retry;
//   - notices a dead connection that never closed: no frame (broadcast or heartbeat) for
//     `watchdogTimeout` ms -> abandon the socket and reconnect;
//   - remembers the last broadcast `id` and reconnects with `?last_id=<id>`, so the server replays
//     what was missed (or sends a `gap` frame when it cannot);
//   - hides the server's heartbeat frames from message listeners;
//   - keeps the channels it subscribed to, with the last id seen on each, and subscribes to them
//     again after every reconnect with that `last_id`, so each channel is recovered too: in
//     batched subscribe frames paced within the server's allowance, however many channels;
//   - sends again, with backoff, a subscribe the server refused for now ("unavailable, try
//     again": its error carries `retry_after`); other refusals are final.
//   - with a `tokenProvider` (a function returning a fresh token, e.g. from a WordPress REST
//     route), sends a new token before every connection as `["bearer", token]`; after 4001 (the
//     token expired) it comes back soon with a new one; a handshake refused with 401 gets one
//     new token and one retry, then the client stops in the state "unauthorized".
//
// Usage:
//
//   import { ReconnectingWebSocket } from "/static/ws-client.js";
//   const client = new ReconnectingWebSocket("wss://example.com/_ws/integers");
//   client.on("state", ({ state }) => console.log("state:", state));
//   client.on("message", ({ id, data }) => console.log(id, data));
//   client.on("gap", ({ lastId, oldestId }) => console.warn("missed messages", lastId, oldestId));
//   client.on("error", ({ fatal, message }) => console.error(message));
//
//   // Channels, on the same connection (what a channel allows is up to the server's service.py):
//   client.subscribe("chat/lobby");
//   client.on("channel", ({ channel, id, data }) => console.log(channel, id, data));
//   client.on("presence", ({ channel, members }) => console.log(channel, [...members]));
//   client.on("refused", ({ request, channel, reason }) => console.warn(request, channel, reason));
//   client.publish("chat/lobby", { name: "Ann", text: "hello" });
//   client.send({ type: "whoami" }); // anything else goes to the service's on_message
//   client.on("reply", ({ data }) => console.log(data)); // what the service sends this client
//   // later: client.close();
//
// CLOSE POLICY (code of the close frame the server sent, or 1006 when the connection just died;
// the table in docs/protocol.md, the vectors in tests/reconnect-policy.json):
//   1000          normal closure: stop (state "closed"); the server meant it.
//   4001          the token expired: get a new one and reconnect soon (a random delay in
//                 [0, min(cap, renewDelay * 2^attempt))).
//   1008, 4000-4999 (but 4001 and 4008)  policy / application refusal: stop (state "closed") and
//                 emit a fatal "error"; reconnecting would only loop (re-authenticate, then create
//                 a new client).
//   1013          "try again later" (busy, e.g. the server cut off a slow consumer): reconnect, but
//                 back off longer: a random delay between `base` and min(cap, base * 2^(attempt + 2)).
//   4008          too much, too soon (past the allowance): as 1013, and resubscribe twice as slowly
//                 (up to 8 times) until a connection is stable again.
//   1001, 1012    going away / service restart (a deploy): reconnect after a random backoff delay.
//   anything else (1006 abnormal closure, 1011, 1009, ...): reconnect after a random backoff delay.

/**
 * Connection states, in the order a healthy client goes through them.
 * - "connecting":   a WebSocket handshake is in progress (the first one or a retry).
 * - "open":         connected; messages flow.
 * - "reconnecting": the connection dropped; waiting for the backoff delay before the next try.
 * - "unauthorized": the server refused the token twice in a row (401); reconnectNow() tries
 *                   again (after signing in, say).
 * - "closed":       terminal: close() was called, or the server closed with 1000, 1008 or 4xxx.
 * @typedef {"connecting" | "open" | "reconnecting" | "unauthorized" | "closed"} ClientState
 */

/**
 * Payload of the "state" event.
 * @typedef {object} StateChange
 * @property {ClientState} state      the new state
 * @property {ClientState} previous   the state before
 * @property {number} [code]          close code that caused the change ("reconnecting", "closed")
 * @property {string} [reason]        close reason that caused the change
 * @property {number} [delay]         ms until the next connection attempt ("reconnecting" only)
 * @property {number} [attempt]       backoff attempt number of that delay, from 0 ("reconnecting" only)
 */

/**
 * Payload of the "message" event: one broadcast, as the server sent it.
 * @typedef {object} BroadcastMessage
 * @property {number} id   monotonically increasing broadcast id
 * @property {*} data      the broadcast's JSON payload (for the integers demo: the integer)
 */

/**
 * Payload of the "gap" event: the server could not replay everything missed since `lastId`.
 * @typedef {object} GapNotice
 * @property {number|null} lastId     the id this client reconnected with
 * @property {number|null} oldestId   the oldest id the server still had, or null
 */

/**
 * Payload of the "error" event.
 * @typedef {object} ClientError
 * @property {boolean} fatal     true when the client has stopped for good (state "closed")
 * @property {string} message    human-readable description
 * @property {number} [code]     close code, for server refusals (1008, 4xxx)
 * @property {string} [reason]   close reason, for server refusals
 * @property {*} [error]         underlying exception or event, when there is one
 */

/**
 * Options. Every dependency on the environment is injectable so that tests can run under Node
 * with fakes (a fake WebSocket class, a fake clock, a seeded random source).
 * @typedef {object} ClientOptions
 * @property {number} [baseDelay=5000]      backoff base in ms: attempt n waits random(0, min(cap, base*2^n));
 *                                          the first retry therefore waits 0-5 s (RFC 6455 §7.2.3)
 * @property {number} [maxDelay=30000]      backoff cap in ms
 * @property {number} [stableAfter=30000]   a connection open at least this long resets the backoff
 * @property {number} [watchdogTimeout=60000]  no frame for this long while open -> reconnect
 *                                          (the server sends a heartbeat every 25 s)
 * @property {number} [connectTimeout=15000]   handshake not finished in this long -> give up and retry
 * @property {string|string[]|(() => string|string[])} [protocols]  WebSocket subprotocols, or a
 *                                          function returning them, called at every connection
 *                                          (`() => ["bearer", freshToken()]`: a new token each time)
 * @property {() => (string|null|Promise<string|null>)} [tokenProvider]  returns a fresh token,
 *                                          called before every connection (sent as ["bearer", token])
 * @property {number} [renewDelay=1000]     backoff base in ms after 4001 (the token expired)
 * @property {Function} [fetch=globalThis.fetch]  to ask the server whether a failed handshake
 *                                          was a 401 (browsers hide the status of a handshake)
 * @property {number|null} [lastId=null]    resume after this broadcast id (sent as last_id)
 * @property {() => number} [random=Math.random]  uniform random source in [0, 1)
 * @property {(fn: Function, ms: number) => *} [setTimeout]
 * @property {(handle: *) => void} [clearTimeout]
 * @property {() => number} [now=Date.now]  clock in ms
 * @property {Function} [WebSocket=globalThis.WebSocket]  WebSocket constructor
 * @property {EventTarget|null} [window=globalThis.window]   target of "online" events (null: none)
 * @property {EventTarget|null} [document=globalThis.document]  target of "visibilitychange" (null: none)
 */

const DEFAULTS = Object.freeze({
  baseDelay: 5000,
  maxDelay: 30000,
  stableAfter: 30000,
  watchdogTimeout: 60000,
  connectTimeout: 15000,
  renewDelay: 1000,
});

/** Close code of a connection whose token expired: come back with a new token. */
const TOKEN_EXPIRED = 4001;

/** The attempt counter stops growing here; 2^30 * base is far past any sensible cap. */
const MAX_ATTEMPT = 30;

/** Close code of a client that sent more than its allowance: reconnect later, send more slowly. */
const RATE_EXCEEDED = 4008;

/** Channels per batched subscribe frame, and most bytes of JSON in one (the server takes 100). */
const SUBSCRIBE_BATCH = 100;
const SUBSCRIBE_BATCH_BYTES = 8192;

/**
 * Batched subscribe frames sent at once (after a reconnect, say), then one every
 * SUBSCRIBE_INTERVAL ms: a quarter of the default allowance's burst, then under half its rate,
 * however many channels. The Python client's pacing, to the letter.
 */
const SUBSCRIBE_BURST = 4;
const SUBSCRIBE_INTERVAL = 250;
/** How much slower, at most, a client subscribes after being closed with 4008. */
const MAX_SLOWDOWN = 8;

/**
 * Full-jitter backoff: a random delay in [min, min(cap, base * 2^attempt)).
 * @param {number} attempt   0 for the first retry after a drop
 * @param {{baseDelay?: number, maxDelay?: number, random?: () => number, minDelay?: number}} [opts]
 * @returns {number} delay in ms (an integer)
 */
export function backoffDelay(attempt, opts = {}) {
  const base = opts.baseDelay ?? DEFAULTS.baseDelay;
  const cap = opts.maxDelay ?? DEFAULTS.maxDelay;
  const random = opts.random ?? Math.random;
  const window = Math.min(cap, base * 2 ** Math.min(attempt, MAX_ATTEMPT));
  const low = Math.min(opts.minDelay ?? 0, window);
  return Math.floor(low + random() * (window - low));
}

/**
 * What to do after the connection closed with `code`.
 * @param {number} code
 * @returns {"stop" | "renew" | "refused" | "later" | "slow" | "retry"}
 *   "stop": do not reconnect (1000); "renew": reconnect soon with a new token (4001);
 *   "refused": do not reconnect, report an error (1008, 4xxx but 4001 and 4008); "later":
 *   reconnect with a longer backoff (1013); "slow": the same, and resubscribe more slowly (4008);
 *   "retry": reconnect with the normal backoff.
 */
export function closePolicy(code) {
  if (code === 1000) return "stop";
  if (code === TOKEN_EXPIRED) return "renew";
  if (code === RATE_EXCEEDED) return "slow";
  if (code === 1008 || (code >= 4000 && code <= 4999)) return "refused";
  if (code === 1013) return "later";
  return "retry";
}

/** Turn "http(s)://" or a path into a "ws(s)://" URL, and set or drop `last_id`. */
function buildUrl(url, lastId, baseHref) {
  const u = new URL(String(url), baseHref);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  if (lastId !== null && lastId !== undefined) u.searchParams.set("last_id", String(lastId));
  return u.toString();
}

/**
 * A WebSocket client that reconnects by itself and resumes from the last broadcast it saw.
 *
 * Events (subscribe with `on(type, listener)`, which returns an unsubscribe function):
 * - "state"   ({@link StateChange}):   connection state changed.
 * - "message" ({@link BroadcastMessage}): a broadcast `{id, data}` arrived (heartbeats are never delivered).
 * - "gap"     ({@link GapNotice}):     the server could not replay everything missed while away.
 * - "error"   ({@link ClientError}):   something went wrong; when `fatal` the client has stopped.
 * - "subscribed" ({channel}):          the server took a subscribe (again after each reconnect).
 * - "channel"  ({channel, id, data}):  a message of a subscribed channel.
 * - "presence" ({channel, members, joined, left}): who is on a channel with presence; `members`
 *                                       is the whole set after the change, `joined` and `left`
 *                                       the names that came and went (lists, maybe empty).
 * - "refused"  ({request, channel, reason}): the server refused a request (the connection stays).
 * - "reply"    ({data}):               a message the server sent to this client alone.
 * - "count"    ({channel, count}):     how many are on a channel with counted presence.
 * - "unauthorized" ({}):               the server refused the token twice in a row (state too).
 * A "gap" on a channel carries its `channel`.
 *
 * The client starts connecting as soon as it is constructed (like a native WebSocket); read
 * `state` for the current state. Listeners run synchronously; an exception in one is reported and
 * does not disturb the client or the other listeners.
 */
export class ReconnectingWebSocket {
  /**
   * @param {string|URL} url  ws:, wss:, http: or https: URL, or a path relative to the page
   * @param {ClientOptions} [options]
   */
  constructor(url, options = {}) {
    const o = { ...DEFAULTS, ...options };
    this.url = url;
    this.options = o;
    /** @type {ClientState} */
    this.state = "connecting";
    /** Number of times the connection opened again after the first time. */
    this.reconnects = 0;
    /** Backoff attempt counter: number of retries since the last stable connection. */
    this.attempt = 0;
    /** Id of the last broadcast received (sent as `last_id` on reconnect), or null. */
    this.lastId = options.lastId ?? null;
    /** Code of the last close (or 1006 for a dead connection), or null. */
    this.lastCloseCode = null;
    /** The channels subscribed to: channel -> id of the last message seen on it, or null. */
    this.channels = new Map();
    /** Who is on each channel with presence: channel -> Set of member names. */
    this.presence = new Map();
    /** How many are on each channel with counted presence: channel -> count. */
    this.counts = new Map();

    const g = globalThis;
    const st = o.setTimeout ?? g.setTimeout;
    const ct = o.clearTimeout ?? g.clearTimeout;
    // Call the timer functions unbound: a native setTimeout called as a method of another
    // object throws "Illegal invocation" in browsers.
    this._setTimeout = (fn, ms) => st.call(g, fn, ms);
    this._clearTimeout = (h) => ct.call(g, h);
    this._now = o.now ?? (() => Date.now());
    this._random = o.random ?? Math.random;
    this._WebSocket = o.WebSocket ?? g.WebSocket;
    this._fetch = o.fetch ?? g.fetch?.bind(g) ?? null;
    this._token = null; // the token of the connection being made or open
    this._renewed = false; // a 401 was answered with a new token: the next one is final
    this._connectSeq = 0; // tells a late token from the provider that nobody waits for
    this._window = "window" in options ? options.window : g.window ?? null;
    this._document = "document" in options ? options.document : g.document ?? null;
    this._baseHref = this._document?.baseURI ?? g.location?.href;

    this._listeners = new Map();
    this._ws = null;
    this._everOpened = false;
    this._openedAt = 0;
    this._lastFrameAt = 0;
    this._retryTimer = null;
    this._watchdogTimer = null;
    this._connectTimer = null;
    this._subscribeTimer = null;
    /** Channels whose subscribe is yet to be sent on this connection, in order. */
    this._unsent = new Set();
    this._subscribeFrames = SUBSCRIBE_BURST; // frames that may go out now (a token bucket)
    this._subscribeFramesAt = 0;
    /** Subscribes refused for now: channel -> {attempt, timer}. */
    this._retries = new Map();
    this._slowdown = 1; // doubled after each 4008, back to 1 once a connection is stable

    this._onOnline = () => this._promptReconnect();
    this._onVisibility = () => {
      if (this._document && this._document.visibilityState === "hidden") return;
      if (this.state === "open") this._checkWatchdog(); // e.g. after the laptop slept
      else this._promptReconnect();
    };
    this._window?.addEventListener?.("online", this._onOnline);
    this._document?.addEventListener?.("visibilitychange", this._onVisibility);

    this._constructing = true;
    this._connect();
    this._constructing = false;
  }

  /**
   * Subscribe to an event ("state", "message", "gap", "error").
   * @param {"state"|"message"|"gap"|"error"} type
   * @param {(payload: object) => void} listener
   * @returns {() => void} a function that unsubscribes the listener
   */
  on(type, listener) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(listener);
    return () => this.off(type, listener);
  }

  /** Unsubscribe a listener added with on(). */
  off(type, listener) {
    this._listeners.get(type)?.delete(listener);
  }

  /**
   * Close for good: no reconnect afterwards. Safe to call more than once.
   * @param {number} [code=1000]  1000 or 3000-4999 (what a browser allows a client to send)
   * @param {string} [reason]
   */
  close(code = 1000, reason = "client closed") {
    if (this.state === "closed") return;
    this._teardown(code, reason);
    this._setState("closed", { code, reason });
  }

  /**
   * Send `message` (any JSON value; an object with a `type` of your service's) if connected.
   * @returns {boolean} false when not connected: nothing is queued across reconnects
   */
  send(message) {
    if (this.state !== "open" || !this._ws) return false;
    this._ws.send(JSON.stringify(message));
    return true;
  }

  /**
   * Receive `channel`'s messages, from now on and after every reconnect, where they left off.
   * @param {string} channel  1-128 letters, digits and _.:@/-
   * @param {{lastId?: number|null}} [options]  resume after this id of the channel
   */
  subscribe(channel, options = {}) {
    if (this.channels.has(channel)) return;
    this.channels.set(channel, options.lastId ?? null);
    this._queueSubscribe(channel);
  }

  /** Stop receiving `channel`'s messages. */
  unsubscribe(channel) {
    if (!this.channels.delete(channel)) return;
    this.presence.delete(channel);
    this.counts.delete(channel);
    this._cancelRetry(channel);
    this._unsent.delete(channel);
    this.send({ type: "unsubscribe", channel });
  }

  /**
   * Publish `data` to every subscriber of `channel`, if the service allows it.
   * @returns {boolean} false when not connected
   */
  publish(channel, data) {
    return this.send({ type: "publish", channel, data });
  }

  /** Connect now if the client is waiting to retry or unauthorized; no-op otherwise. */
  reconnectNow() {
    if (this.state !== "reconnecting" && this.state !== "unauthorized") return;
    this._renewed = false;
    this._clearTimer("_retryTimer");
    this._connect();
  }

  // -- internals -------------------------------------------------------------------------------

  _emit(type, payload) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (err) {
        if (typeof globalThis.reportError === "function") globalThis.reportError(err);
        else console.error(err);
      }
    }
  }

  _setState(state, extra = {}) {
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, ...extra });
  }

  _clearTimer(name) {
    if (this[name] !== null) {
      this._clearTimeout(this[name]);
      this[name] = null;
    }
  }

  _connect() {
    if (this.state !== "connecting") this._setState("connecting");
    const provider = this.options.tokenProvider;
    this._token = null;
    if (!provider) {
      this._open();
      return;
    }
    const seq = ++this._connectSeq;
    const current = () => seq === this._connectSeq && this.state === "connecting";
    this._connectTimer = this._setTimeout(() => {
      this._connectTimer = null;
      if (current() && !this._ws) this._afterDrop(1006, "token provider timeout");
    }, this.options.connectTimeout);
    Promise.resolve()
      .then(() => provider())
      .then(
        (token) => {
          if (!current()) return;
          this._clearTimer("_connectTimer");
          this._token = typeof token === "string" && token ? token : null;
          this._open();
        },
        (error) => {
          if (!current()) return;
          this._emit("error", { fatal: false, message: `token provider failed: ${error?.message ?? error}`, error });
          this._afterDrop(1006, "token provider failed");
        },
      );
  }

  _open() {
    let ws;
    try {
      let protocols = this.options.protocols;
      if (typeof protocols === "function") protocols = protocols();
      if (this._token !== null) protocols = ["bearer", this._token, ...[protocols ?? []].flat()];
      ws = new this._WebSocket(buildUrl(this.url, this.lastId, this._baseHref), protocols);
    } catch (error) {
      // A bad URL (SyntaxError) or a blocked one (SecurityError) will not get better by retrying.
      this._teardown();
      this._setState("closed", { code: 1006, reason: String(error?.message ?? error) });
      const payload = { fatal: true, message: `cannot open WebSocket: ${error?.message ?? error}`, error };
      // From inside the constructor nobody could have subscribed yet: report a tick later.
      if (this._constructing) queueMicrotask(() => this._emit("error", payload));
      else this._emit("error", payload);
      return;
    }
    this._ws = ws;
    ws.onopen = () => this._handleOpen(ws);
    ws.onmessage = (event) => this._handleFrame(ws, event);
    ws.onclose = (event) => this._handleClose(ws, event.code, event.reason);
    ws.onerror = (event) => {
      if (ws !== this._ws) return;
      this._emit("error", { fatal: false, message: "WebSocket error", error: event });
      // Before "open", an error means the handshake failed. Browsers follow it with a close event
      // (1006), but some implementations (Node 20's experimental WebSocket) never do: retry now.
      // After "open", browsers fire "close" right after "error", with the code that decides what
      // to do next; the watchdog covers an implementation that would not.
      if (this.state === "connecting") this._abandon(ws, "connection failed");
    };
    this._connectTimer = this._setTimeout(() => {
      this._connectTimer = null;
      if (ws === this._ws && this.state === "connecting") this._abandon(ws, "connect timeout");
    }, this.options.connectTimeout);
  }

  _handleOpen(ws) {
    if (ws !== this._ws) return;
    this._clearTimer("_connectTimer");
    if (this._everOpened) this.reconnects += 1;
    this._everOpened = true;
    this._renewed = false;
    this._openedAt = this._now();
    this._lastFrameAt = this._openedAt;
    this._armWatchdog(this.options.watchdogTimeout);
    this._setState("open");
    // Every channel again, each with its last id, within the allowance.
    this._unsent = new Set(this.channels.keys());
    this._subscribeFrames = SUBSCRIBE_BURST;
    this._subscribeFramesAt = this._now();
    this._sendSubscribes();
  }

  /** Have `channel`'s subscribe sent with the next batch (if it is still wanted). */
  _queueSubscribe(channel) {
    if (!this.channels.has(channel)) return;
    this._unsent.add(channel);
    if (this.state === "open" && this._subscribeTimer === null) this._sendSubscribes();
  }

  /**
   * Send the queued subscribes while open, within the allowance: batched frames of at most
   * SUBSCRIBE_BATCH channels and about SUBSCRIBE_BATCH_BYTES, each with its last id;
   * SUBSCRIBE_BURST frames at once, then one every SUBSCRIBE_INTERVAL ms (times the slowdown
   * after a 4008).
   */
  _sendSubscribes() {
    this._subscribeTimer = null;
    const interval = SUBSCRIBE_INTERVAL * this._slowdown;
    while (this._unsent.size && this.state === "open") {
      const now = this._now();
      this._subscribeFrames = Math.min(
        SUBSCRIBE_BURST,
        this._subscribeFrames + (now - this._subscribeFramesAt) / interval,
      );
      this._subscribeFramesAt = now;
      if (this._subscribeFrames < 1) {
        const wait = Math.ceil((1 - this._subscribeFrames) * interval);
        this._subscribeTimer = this._setTimeout(() => this._sendSubscribes(), wait);
        return;
      }
      this._subscribeFrames -= 1;
      this.send({ type: "subscribe", channels: this._nextBatch() });
    }
  }

  /** Take the next batch of queued subscribes: `{channel, last_id}` each. */
  _nextBatch() {
    const batch = [];
    let size = 0;
    for (const channel of this._unsent) {
      const lastId = this.channels.get(channel);
      const entry = lastId === null ? { channel } : { channel, last_id: lastId };
      size += JSON.stringify(entry).length + 2;
      if (batch.length && (batch.length === SUBSCRIBE_BATCH || size > SUBSCRIBE_BATCH_BYTES)) break;
      this._unsent.delete(channel);
      batch.push(entry);
    }
    return batch;
  }

  /**
   * Subscribe to `channel` again later: the server refused it for now, for `retryAfter` s. The
   * delay is in [wait, 2 * wait) ms with wait = min(cap, retryAfter * 2^attempt); a reconnect
   * meanwhile subscribes to it anyway (it stays in `channels`).
   */
  _retrySubscribe(channel, retryAfter) {
    const previous = this._retries.get(channel);
    if (previous) this._clearTimeout(previous.timer);
    const attempt = previous ? previous.attempt : 0;
    const wait = Math.min(this.options.maxDelay, retryAfter * 1000 * 2 ** Math.min(attempt, MAX_ATTEMPT));
    const delay = Math.floor(wait * (1 + this._random()));
    const timer = this._setTimeout(() => {
      const retry = this._retries.get(channel);
      if (retry) retry.timer = null;
      this._queueSubscribe(channel);
    }, delay);
    this._retries.set(channel, { attempt: attempt + 1, timer });
  }

  _cancelRetry(channel) {
    const retry = this._retries.get(channel);
    if (!retry) return;
    if (retry.timer !== null) this._clearTimeout(retry.timer);
    this._retries.delete(channel);
  }

  _handleChannelFrame(frame) {
    const channel = frame.channel;
    if (!this.channels.has(channel)) return; // unsubscribed meanwhile
    if (frame.type === "subscribed") {
      // Where the channel stood: recovery after a drop starts there, even before any message.
      if (this.channels.get(channel) === null && Number.isInteger(frame.last_id)) {
        this.channels.set(channel, frame.last_id);
      }
      this._cancelRetry(channel);
      this._emit("subscribed", { channel });
    } else if (frame.type === "presence" && Number.isInteger(frame.count)) {
      this.counts.set(channel, frame.count);
      this._emit("count", { channel, count: frame.count });
    } else if (frame.type === "presence") {
      let members = this.presence.get(channel) ?? new Set();
      if (Array.isArray(frame.members)) members = new Set(frame.members);
      const joined = Array.isArray(frame.joined) ? frame.joined : [];
      const left = Array.isArray(frame.left) ? frame.left : [];
      for (const name of joined) members.add(name);
      for (const name of left) members.delete(name);
      this.presence.set(channel, members);
      this._emit("presence", { channel, members, joined, left });
    } else if (frame.type === "gap") {
      this._emit("gap", { channel, lastId: frame.last_id ?? null, oldestId: frame.oldest_id ?? null });
    } else if ("id" in frame) {
      const lastId = this.channels.get(channel);
      if (lastId !== null && frame.id <= lastId) return; // seen already
      this.channels.set(channel, frame.id);
      this._emit("channel", { channel, id: frame.id, data: frame.data });
    }
  }

  _handleFrame(ws, event) {
    if (ws !== this._ws) return;
    this._lastFrameAt = this._now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch (error) {
      this._emit("error", { fatal: false, message: "frame is not JSON", error });
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    if (frame.type === "heartbeat") return;
    if (frame.type === "error") {
      const channel = frame.channel ?? null;
      if (frame.request === "subscribe" && channel !== null && this.channels.has(channel)) {
        // Refused for now ("unavailable, try again"): sent again later. Any other refusal is
        // forgotten: it is not sent again after a reconnect.
        if (typeof frame.retry_after === "number") this._retrySubscribe(channel, frame.retry_after);
        else this.channels.delete(channel);
      }
      this._emit("refused", { request: frame.request ?? null, channel, reason: frame.reason });
      return;
    }
    if (typeof frame.channel === "string") {
      this._handleChannelFrame(frame);
      return;
    }
    if (frame.type === "message") {
      this._emit("reply", { data: frame.data });
      return;
    }
    if (frame.type === "gap") {
      this._emit("gap", { lastId: frame.last_id ?? null, oldestId: frame.oldest_id ?? null });
      return;
    }
    if ("id" in frame) {
      this.lastId = frame.id;
      this._emit("message", { id: frame.id, data: frame.data });
    }
    // Other frames (unknown "type") are ignored: newer servers may send more kinds.
  }

  _handleClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._afterDrop(code ?? 1006, reason ?? "");
  }

  /** Give up on a socket that never closed by itself (dead peer, hung handshake). */
  _abandon(ws, why) {
    const wasOpenFor = this.state === "open" ? this._now() - this._openedAt : 0;
    this._detach(); // first: a close event from this socket must not reach us any more
    try {
      ws.close(4000, why); // best effort; we do not wait for its close event
    } catch {
      /* ignore */
    }
    this._afterDrop(1006, why, wasOpenFor);
  }

  _afterDrop(code, reason, wasOpenFor = this.state === "open" ? this._now() - this._openedAt : 0) {
    const failedHandshake = this.state === "connecting";
    this._detach();
    this.lastCloseCode = code;
    const token = this._token;
    if (failedHandshake && token !== null && this._fetch) {
      // Browsers hide why a handshake failed: ask the server whether the token was the reason.
      this._askWhetherRefused(token).then((refused) => {
        if (this.state !== "connecting" || this._ws) return; // closed or reconnected meanwhile
        if (refused && !this._renewed) {
          this._renewed = true; // one new token and one retry, at once
          this._connect();
        } else if (refused) {
          this._clearTimer("_retryTimer");
          this._setState("unauthorized", { code: 401, reason: "token refused" });
          this._emit("unauthorized", {});
        } else {
          this._retryAfter(code, reason, wasOpenFor);
        }
      });
      return;
    }
    this._retryAfter(code, reason, wasOpenFor);
  }

  /** Whether the server answers 401 to `token` (false when it cannot tell). */
  async _askWhetherRefused(token) {
    const url = new URL(buildUrl(this.url, null, this._baseHref));
    url.protocol = url.protocol === "wss:" ? "https:" : "http:";
    try {
      const response = await this._fetch(url.toString(), {
        headers: { Authorization: `Bearer ${token}` },
        cache: "no-store",
        signal: globalThis.AbortSignal?.timeout?.(this.options.connectTimeout),
      });
      return response.status === 401;
    } catch {
      return false;
    }
  }

  _retryAfter(code, reason, wasOpenFor) {
    const policy = closePolicy(code);
    if (policy === "stop") {
      this._teardown();
      this._setState("closed", { code, reason });
      return;
    }
    if (policy === "refused") {
      this._teardown();
      this._setState("closed", { code, reason });
      this._emit("error", {
        fatal: true,
        code,
        reason,
        message: `server refused the connection (${code}${reason ? ` ${reason}` : ""}); not reconnecting`,
      });
      return;
    }
    if (wasOpenFor >= this.options.stableAfter) {
      this.attempt = 0;
      this._slowdown = 1;
    }
    if (policy === "slow") this._slowdown = Math.min(2 * this._slowdown, MAX_SLOWDOWN);
    const attempt = this.attempt;
    const o = this.options;
    let delay;
    if (policy === "later" || policy === "slow") delay = backoffDelay(attempt + 2, { ...this._backoffOpts(), minDelay: o.baseDelay });
    else if (policy === "renew") delay = backoffDelay(attempt, { ...this._backoffOpts(), baseDelay: o.renewDelay });
    else delay = backoffDelay(attempt, this._backoffOpts());
    this.attempt = Math.min(attempt + 1, MAX_ATTEMPT);
    this._setState("reconnecting", { code, reason, delay, attempt });
    this._retryTimer = this._setTimeout(() => {
      this._retryTimer = null;
      if (this.state === "reconnecting") this._connect();
    }, delay);
  }

  _backoffOpts() {
    return { baseDelay: this.options.baseDelay, maxDelay: this.options.maxDelay, random: this._random };
  }

  _armWatchdog(ms) {
    this._clearTimer("_watchdogTimer");
    this._watchdogTimer = this._setTimeout(() => {
      this._watchdogTimer = null;
      this._checkWatchdog();
    }, Math.max(0, ms));
  }

  /** Reconnect if nothing arrived for watchdogTimeout ms; otherwise re-arm for the time left. */
  _checkWatchdog() {
    if (this.state !== "open" || !this._ws) return;
    const silent = this._now() - this._lastFrameAt;
    const left = this.options.watchdogTimeout - silent;
    if (left <= 0) this._abandon(this._ws, "no frame received (watchdog)");
    else this._armWatchdog(left);
  }

  /** The browser came back online or the tab became visible: retry now if waiting. */
  _promptReconnect() {
    if (this.state !== "reconnecting") return;
    // 1013 and 4008 asked us to stay away for a while: coming back online does not change that.
    if (this.lastCloseCode === 1013 || this.lastCloseCode === RATE_EXCEEDED) return;
    this.reconnectNow();
  }

  /** Stop listening to the current socket and stop its timers. */
  _detach() {
    this._clearTimer("_connectTimer");
    this._clearTimer("_watchdogTimer");
    this._clearTimer("_subscribeTimer");
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    }
    return ws;
  }

  /** Release everything: socket (closed with `code` if still there), timers, page listeners. */
  _teardown(code, reason) {
    const ws = this._detach();
    if (ws && code !== undefined) {
      try {
        ws.close(code, reason);
      } catch {
        /* ignore */
      }
    }
    this._clearTimer("_retryTimer");
    for (const channel of [...this._retries.keys()]) this._cancelRetry(channel);
    this._window?.removeEventListener?.("online", this._onOnline);
    this._document?.removeEventListener?.("visibilitychange", this._onVisibility);
  }
}

/**
 * Convenience factory: `createClient(url, options)` is `new ReconnectingWebSocket(url, options)`.
 * @param {string|URL} url
 * @param {ClientOptions} [options]
 * @returns {ReconnectingWebSocket}
 */
export function createClient(url, options) {
  return new ReconnectingWebSocket(url, options);
}

export default ReconnectingWebSocket;
