"""The MRD v2 (yardl) stream codec: schema, reader and writer, mapping to MRD v1 messages.

MRD v2 is the binary protocol of the MRD project (mrd-python, the MRD C++ tools) and of
current Gadgetron.  Streams are read and written through the MRD v1 message objects, so every
program of this package handles both generations with the same code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

MAGIC = b"yardl"
"""The first bytes of every v2 stream (its prologue), all a reader of the other generation
needs to tell the two apart; the codec itself loads only when a v2 stream comes."""

if TYPE_CHECKING:
    from .header import header_from_xml, header_to_xml
    from .notes import Notes
    from .reader import Mrd2StreamReader
    from .schema import SCHEMA_TEXT, SCHEMA_VERSION, describe_schema
    from .writer import Mrd2StreamWriter

__all__ = [
    "MAGIC",
    "SCHEMA_TEXT",
    "SCHEMA_VERSION",
    "Mrd2StreamReader",
    "Mrd2StreamWriter",
    "Notes",
    "describe_schema",
    "header_from_xml",
    "header_to_xml",
]

_HOMES = {
    "header_from_xml": ".header",
    "header_to_xml": ".header",
    "Notes": ".notes",
    "Mrd2StreamReader": ".reader",
    "SCHEMA_TEXT": ".schema",
    "SCHEMA_VERSION": ".schema",
    "describe_schema": ".schema",
    "Mrd2StreamWriter": ".writer",
}


def __getattr__(name: str) -> Any:
    """Load the codec on first use (PEP 562): a v1 run never pays for the v2 schema."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value
