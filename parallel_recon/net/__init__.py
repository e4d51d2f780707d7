"""Remote reconstruction over TCP: the ``serve`` server and the ``send`` client."""

from __future__ import annotations

from .client import send_stream
from .server import ReconServer, ServerConfig

__all__ = ["ReconServer", "ServerConfig", "send_stream"]
