// Socket.IO's official client against a running app, for tests/test_socketio.py.
// Usage: node client.mjs BASE_URL SCENARIO. Prints one JSON line per step the test reads; every
// scenario ends by itself (or the test's timeout ends it).
import { io } from "socket.io-client";

const [base, scenario, ...args] = process.argv.slice(2);

/** Print one line for the test. */
function report(event, fields = {}) {
  console.log(JSON.stringify({ event, ...fields }));
}

/** A client of the app's /socket.io/ over WebSockets, recovering from the last id it saw. */
function connect(options = {}) {
  const socket = io(base, { transports: ["websocket"], reconnectionDelayMax: 500, ...options });
  socket.lastId = null;
  socket.on("integers", (message) => {
    socket.lastId = message.id;
  });
  return socket;
}

/** The next `count` payloads of `event` on `socket`. */
function next(socket, event, count = 1) {
  return new Promise((resolve) => {
    const received = [];
    const listener = (message) => {
      received.push(message);
      if (received.length === count) {
        socket.off(event, listener);
        resolve(received);
      }
    };
    socket.on(event, listener);
  });
}

/** Why `socket` was disconnected, or why it could not connect. */
function ended(socket) {
  return new Promise((resolve) => {
    socket.on("disconnect", (reason) => resolve(reason));
    socket.on("connect_error", (error) => resolve(`connect_error: ${error.message}`));
  });
}

const scenarios = {
  // Two clients get the integers of one sequence, as {"id": N, "data": n}.
  async integers() {
    const clients = [connect(), connect()];
    const received = await Promise.all(clients.map((socket) => next(socket, "integers", 3)));
    report("integers", { received });
    clients.forEach((socket) => socket.close());
  },

  // Channels are rooms: each client hears its own room only, with the hub's ids.
  async rooms() {
    const [ann, bob, eve] = [connect(), connect(), connect()];
    const subscribed = [ann, bob, eve].map((socket) => next(socket, "subscribed"));
    ann.emit("subscribe", { channel: "chat/a" });
    bob.emit("subscribe", { channel: "chat/b" });
    eve.emit("subscribe", { channel: "chat/a" });
    const answers = (await Promise.all(subscribed)).map(([answer]) => answer);
    const heard = { ann: [], bob: [], eve: [] };
    for (const [name, socket] of Object.entries({ ann, bob, eve })) {
      socket.on("publish", (message) => heard[name].push(message));
    }
    const refused = next(bob, "error");
    bob.emit("subscribe", { channel: "elsewhere" }); // not a chat room: the service says no
    const bobHearsBob = next(bob, "publish");
    const eveHearsAnn = next(eve, "publish");
    ann.emit("publish", { channel: "chat/a", data: { name: "Ann", text: "to room a" } });
    bob.emit("publish", { channel: "chat/b", data: { name: "Bob", text: "to room b" } });
    await Promise.all([bobHearsBob, eveHearsAnn]);
    const [error] = await refused;
    // One more round trip for each, so that anything misrouted has arrived by now.
    const members = await Promise.all(
      [ann, bob, eve].map((socket) => {
        const answer = next(socket, "message");
        socket.emit("whoami");
        return answer;
      }),
    );
    report("rooms", { subscribed: answers, heard, error, members: members.flat() });
    [ann, bob, eve].forEach((socket) => socket.close());
  },

  // Recovery: after `ready` the connection drops (`drop`: the client's own network, say) or the
  // test restarts the server (`restart`); the client comes back with auth: {last_id} by itself.
  async recover(how) {
    const socket = connect({
      auth: (answer) => answer(socket.lastId === null ? {} : { last_id: socket.lastId }),
    });
    await next(socket, "integers", 3);
    const lastId = socket.lastId;
    const after = [];
    for (const event of ["integers", "gap"]) {
      socket.on(event, (message) => after.push({ event, ...message }));
    }
    const reconnected = new Promise((resolve) => socket.io.once("reconnect", resolve));
    report("ready", { last_id: lastId });
    if (how === "drop") socket.io.engine.close();
    await reconnected;
    await next(socket, "integers", 3);
    report("recovered", { last_id: lastId, after });
    socket.close();
  },

  // Long-polling is refused, as a client with the default transports and as a plain request.
  async polling() {
    const socket = io(base, { transports: ["polling"], reconnection: false });
    const reason = await ended(socket);
    const response = await fetch(`${base}/socket.io/?EIO=4&transport=polling`);
    report("polling", { reason, status: response.status, body: await response.text() });
    socket.close();
  },

  // A client over its limits: too many rooms gets an error; too large or too many messages
  // end its connection; the well-behaved client beside it goes on.
  async misbehaving() {
    const bystander = connect();
    await next(bystander, "integers");
    const greedy = connect({ reconnection: false });
    await new Promise((resolve) => greedy.on("connect", resolve));
    const errors = next(greedy, "error");
    for (const room of ["chat/1", "chat/2", "chat/3"]) greedy.emit("subscribe", { channel: room });
    const [tooMany] = await errors;
    greedy.close();

    const large = connect({ reconnection: false });
    await new Promise((resolve) => large.on("connect", resolve));
    const largeEnded = ended(large);
    large.emit("publish", { channel: "chat/1", data: { name: "x", text: "y".repeat(70_000) } });
    const largeReason = await largeEnded;

    const flood = connect({ reconnection: false });
    await new Promise((resolve) => flood.on("connect", resolve));
    const floodEnded = ended(flood);
    for (let i = 0; i < 200; i++) flood.emit("whoami");
    const floodReason = await floodEnded;

    const before = bystander.lastId;
    const [after] = await next(bystander, "integers");
    report("misbehaving", {
      too_many: tooMany,
      large: largeReason,
      flood: floodReason,
      bystander: [before, after.id],
    });
    bystander.close();
  },
};

await scenarios[scenario](...args);
