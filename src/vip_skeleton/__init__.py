"""vip-skeleton: a Copier template and CLI for Python real-time web apps on VIP-style platforms."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("vip-skeleton")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
