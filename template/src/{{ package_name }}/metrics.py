"""The process's metrics, in Prometheus's text format at ``GET /metrics`` (``METRICS_TOKEN``).

Counted where they happen, once per event or per fan-out (never per delivery in the hot loop):
connections, joins and leaves, broadcasts, deliveries and bytes written, cut-offs by reason,
replays by outcome, refused upgrades by reason, fan-out duration, the event loop's lag, and the
broker's state. Every metric lives in a registry of its own, not prometheus-client's global one.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Fan-out durations, in seconds: from a few clients to tens of thousands.
FAN_OUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The instruments of one process."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.connections = Gauge(
            "websocket_connections", "WebSocket connections open now", registry=registry
        )
        self.channels = Gauge(
            "channels", "Channels with a replay log in this process", registry=registry
        )
        self.joins = Counter("websocket_joins", "WebSocket connections opened", registry=registry)
        self.leaves = Counter("websocket_leaves", "WebSocket connections ended", registry=registry)
        self.broadcasts = Counter(
            "broadcasts", "Broadcasts fanned out to this process's clients", registry=registry
        )
        self.deliveries = Counter(
            "deliveries",
            "Frames written to clients (a broadcast to N clients is N)",
            registry=registry,
        )
        self.sent_bytes = Counter(
            "sent_bytes", "Bytes of broadcast frames written to clients", registry=registry
        )
        self.cut_offs = Counter(
            "cut_offs",
            "Clients cut off: reading too slowly (closed with 1013), or silent (dropped)",
            ["reason"],
            registry=registry,
        )
        self.replays = Counter(
            "replays",
            "Reconnecting clients, by outcome (replayed, gap)",
            ["outcome"],
            registry=registry,
        )
        self.refused_publishes = Counter(
            "refused_publishes",
            "Clients' publishes refused past PUBLISHES_PER_SECOND (process) or"
            " CHANNEL_PUBLISHES_PER_SECOND (channel), by budget",
            ["budget"],
            registry=registry,
        )
        self.refused = Counter(
            "refused_upgrades",
            "WebSocket upgrades refused, by reason",
            ["reason"],
            registry=registry,
        )
        self.refused_channels = Counter(
            "refused_new_channels",
            "Subscribes refused past MAX_NEW_CHANNELS_PER_MINUTE (channels new to the process)",
            registry=registry,
        )
        self.fan_out_seconds = Histogram(
            "fan_out_seconds",
            "Time to write one broadcast to every client",
            buckets=FAN_OUT_BUCKETS,
            registry=registry,
        )
        self.loop_lag = Gauge(
            "event_loop_lag_seconds",
            "How late the event loop ran a timer, lately",
            registry=registry,
        )
        self.broker_connected = Gauge(
            "broker_connected", "1 while the message broker is reachable", registry=registry
        )
        self.broker_reconnects = Counter(
            "broker_reconnects", "Times the message broker was reached again", registry=registry
        )
        self.broker_batch = Gauge(
            "broker_batch_messages",
            "Messages in the broker's last delivery batch (more than 1: it is behind)",
            registry=registry,
        )
