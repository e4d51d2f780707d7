"""The MRD v2 (yardl) stream codec: schema, reader and writer, mapping to MRD v1 messages.

MRD v2 is the binary protocol of the MRD project (mrd-python, the MRD C++ tools) and of
current Gadgetron.  Streams are read and written through the MRD v1 message objects, so every
program of this package handles both generations with the same code.
"""

from .header import header_from_xml, header_to_xml
from .notes import Notes
from .reader import Mrd2StreamReader
from .schema import MAGIC, SCHEMA_TEXT, SCHEMA_VERSION, describe_schema
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
