"""The application's shared objects, each under its typed key: ``request.app[HUB_KEY]``.

A leaf: the modules that build the app and serve its requests import the keys from here, never
from each other.
"""

from __future__ import annotations

from aiohttp import web

from .guards import Admission
from .hooks import Hooks
from .hub import Hub
from .logs import RefusalLog
from .metrics import Metrics
from .settings import Settings

HUB_KEY = web.AppKey("hub", Hub)
SETTINGS_KEY = web.AppKey("settings", Settings)
SERVICE_KEY = web.AppKey("service", Hooks)
ADMISSION_KEY = web.AppKey("admission", Admission)
METRICS_KEY = web.AppKey("metrics", Metrics)
REFUSALS_KEY = web.AppKey("refusals", RefusalLog)
#: WebSockets past their 101 that the hub does not count yet (a Socket.IO client before it
#: connects to its namespace): counted against ``MAX_CONNECTIONS`` all the same.
UNJOINED_KEY = web.AppKey("unjoined", set[object])
