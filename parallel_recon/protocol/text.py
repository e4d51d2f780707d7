"""Parsing the XML text that MRD messages carry (the HEADER, image meta attributes), and
showing a stream's text on a terminal.

The stream delivers this text already decoded (UTF-8), so it is parsed as a string: an XML
declaration that names another encoding, or one Python does not know
(``<?xml version="1.0" encoding="x-unknown"?>``), changes nothing instead of crashing the
parser.  Namespaces are dropped from the tags, because headers written by other tools come
with and without the ISMRMRD namespace and mean the same.

The text comes from whoever sent the stream (a remote client of ``serve``), so it is parsed
with ``defusedxml``: entity declarations and external references are refused outright, so
that no "billion laughs" expansion or external entity depends on the expat version of the
Python build.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import defusedxml
import defusedxml.ElementTree

__all__ = ["parse_xml", "printable"]


def parse_xml(text: str) -> ET.Element:
    """The root element of ``text``, with namespace-free tags.

    Raises
    ------
    xml.etree.ElementTree.ParseError
        For anything the parser rejects (one line of text in its message).
    """
    try:
        root = defusedxml.ElementTree.fromstring(text)
    except ET.ParseError:
        raise
    except defusedxml.EntitiesForbidden as exc:
        raise ET.ParseError(
            f"expected XML without entity declarations, found the entity {exc.name!r} "
            "(entities are refused: they can expand without bound)"
        ) from None
    except defusedxml.DefusedXmlException as exc:
        raise ET.ParseError(f"expected plain XML, found {type(exc).__name__}: {exc}") from None
    except (ValueError, LookupError) as exc:  # e.g. "multi-byte encodings are not supported"
        raise ET.ParseError(" ".join(str(exc).split())) from None
    for node in root.iter():
        if isinstance(node.tag, str) and "}" in node.tag:
            node.tag = node.tag.split("}", 1)[1]
    return root


_CONTROL = {code: f"\\x{code:02x}" for code in (*range(0x20), 0x7F) if code != 0x09}
_CONTROL[0x0A] = "\\n"
_CONTROL[0x0D] = "\\r"


def printable(text: str) -> str:
    """``text`` on one line with control characters shown escaped (``\\n``, ``\\x1b``).

    Text from a stream (a TEXT message) is the sender's: printed raw, a newline would break
    the one-line-per-message log and an escape sequence would reach the user's terminal.
    """
    return text.translate(_CONTROL)
