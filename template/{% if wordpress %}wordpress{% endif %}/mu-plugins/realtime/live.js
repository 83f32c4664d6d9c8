// live.js: makes a single post's page live. An ES module, enqueued by page.php with
// window.realtimeConfig; it imports the app's own client (served with CORS for this site's origin).
//
// Each live region (<div class="realtime-live" data-channel="comments:42" data-last-id="...">)
// is subscribed from its data-last-id, so an edge-cached page gets exactly what was published
// since it was cached. Comments are appended, Liveblog entries prepended (replaced, removed), and
// a post's update shows a notice. When the socket cannot open, the page polls the REST API
// every config.pollSeconds (10 s, as Liveblog does) until it can.
//
// <html data-realtime="..."> says where the page stands, for a site's styles (a "live" badge):
// "live" once every region's channel is subscribed, "polling", or the socket's state.

const config = window.realtimeConfig;
const regions = new Map(
  [...document.querySelectorAll(".realtime-live[data-channel]")].map((el) => [el.dataset.channel, el]),
);
const seenComments = new Set();
let lastModified = null;

function kindOf(channel) {
  return channel.replace(/^private:/, "").split(":")[0];
}

function showPost(region, data) {
  if (data.status === "publish" && data.modified === lastModified) return;
  lastModified = data.modified;
  const notice = document.createElement("p");
  notice.className = "realtime-notice";
  notice.textContent = config.updated + " ";
  if (data.link) {
    const link = document.createElement("a");
    link.href = data.link;
    link.textContent = config.reload;
    notice.append(link);
  }
  region.replaceChildren(notice);
}

function showComment(region, data) {
  const existing = document.getElementById(`comment-${data.id}`);
  if (data.action === "removed") {
    existing?.remove();
    return;
  }
  const item = existing ?? document.createElement("div");
  item.id = `comment-${data.id}`;
  item.className = "realtime-comment";
  const author = document.createElement("strong");
  author.textContent = data.author;
  const body = document.createElement("div");
  body.innerHTML = data.content; // rendered by WordPress (comment_text), as the page renders it
  item.replaceChildren(author, body);
  if (!existing) region.append(item);
  seenComments.add(data.id);
}

function showEntry(region, data) {
  const old = region.querySelector(`[data-entry-id="${data.replaces ?? data.id}"]`);
  if (data.action === "delete") {
    old?.remove();
    return;
  }
  const entry = document.createElement("div");
  entry.className = "realtime-entry";
  entry.dataset.entryId = String(data.id);
  entry.innerHTML = data.content; // rendered by WordPress
  if (old) old.replaceWith(entry);
  else region.prepend(entry);
}

function show(channel, data) {
  const region = regions.get(channel);
  if (!region || !data) return;
  const kind = kindOf(channel);
  if (kind === "post") showPost(region, data);
  else if (kind === "comments") showComment(region, data);
  else if (kind === "liveblog") showEntry(region, data);
}

async function fetchToken() {
  const response = await fetch(config.tokenUrl, {
    headers: { "X-WP-Nonce": config.nonce },
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error(`token: ${response.status}`);
  return (await response.json()).token;
}

// Polling, while the socket is not open: the post's modified time and the newest comments.
let pollTimer = null;

function restUrl(base, params) {
  // The REST root may be /wp-json/... or, with plain permalinks, ?rest_route=...: add, never append.
  const url = new URL(base, location.href);
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  return url;
}

async function pollOnce() {
  const headers = config.nonce ? { "X-WP-Nonce": config.nonce } : {};
  const post = await fetch(restUrl(config.postRest, { _fields: "id,status,link,modified_gmt" }), { headers });
  if (post.ok) {
    const p = await post.json();
    const modified = `${p.modified_gmt}Z`.replace(/ZZ$/, "Z");
    if (lastModified !== null && modified !== lastModified) {
      for (const [channel] of regions) if (kindOf(channel) === "post") show(channel, { ...p, modified });
    }
    lastModified ??= modified;
  }
  const query = { orderby: "id", order: "desc", per_page: "20" };
  const comments = await fetch(restUrl(config.commentsRest, query), { headers });
  if (comments.ok) {
    for (const c of (await comments.json()).reverse()) {
      if (seenComments.has(c.id)) continue;
      for (const [channel] of regions) {
        if (kindOf(channel) === "comments") {
          show(channel, { action: "approved", id: c.id, author: c.author_name, content: c.content.rendered });
        }
      }
    }
  }
}

function startPolling() {
  pollTimer ??= setInterval(() => pollOnce().catch(() => {}), config.pollSeconds * 1000);
  document.documentElement.dataset.realtime = "polling";
}

function stopPolling() {
  clearInterval(pollTimer);
  pollTimer = null;
}

async function main() {
  if (!config || regions.size === 0) return;
  let token = config.tokenUrl ? await fetchToken() : null;
  const { ReconnectingWebSocket } = await import(config.client);
  const client = new ReconnectingWebSocket(config.socket, {
    protocols: () => (token ? ["bearer", token] : []),
  });
  if (token) {
    setInterval(async () => {
      token = await fetchToken().catch(() => token);
    }, 240_000); // a token lives 5 minutes: the next connection gets a fresh one
  }
  const fallback = setTimeout(startPolling, config.pollSeconds * 1000);
  const subscribed = new Set();
  client.on("state", ({ state }) => {
    subscribed.clear();
    document.documentElement.dataset.realtime = state;
    if (state === "open") {
      clearTimeout(fallback);
      stopPolling();
    } else {
      startPolling();
    }
  });
  client.on("subscribed", ({ channel }) => {
    subscribed.add(channel);
    if (subscribed.size === regions.size) document.documentElement.dataset.realtime = "live";
  });
  client.on("channel", ({ channel, data }) => show(channel, data));
  for (const [channel, region] of regions) {
    const lastId = region.dataset.lastId ? Number(region.dataset.lastId) : null;
    client.subscribe(channel, { lastId });
  }
}

main().catch(() => startPolling());
