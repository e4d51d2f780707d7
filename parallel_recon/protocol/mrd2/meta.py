"""Image meta: MRD v1's attribute XML <-> MRD v2's typed ``ImageMeta`` map.

v1 images carry their meta as ISMRMRD meta XML (``<ismrmrdMeta><meta><name>k</name>
<value>v</value>...``), every value a string; v2 images carry a map from name to a list of
typed values (``string``, ``int64``, ``float64``).  The mapping follows the MRD project's
converters: a value becomes an ``int64`` when it reads as an integer written without ``.``,
``e`` or ``_``, else a ``float64`` when it reads as a number, else a (stripped) string; the
other way, values are written with Python's ``str`` into the XML that ``ismrmrd.Meta``
writes, byte for byte.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

__all__ = ["MetaValue", "meta_from_attributes", "meta_to_attributes"]

MetaValue = tuple[str, Any]
"""One typed value: ``("string", "abc")``, ``("int64", 3)`` or ``("float64", 0.5)``."""

_INT64 = (-(1 << 63), (1 << 63) - 1)
_DECLARATION = "<?xml version='1.0' encoding='UTF-8'?>\n"


def _typed(text: str) -> MetaValue:
    """The v2 value of one v1 meta value string."""
    value = text.strip()
    if not any(mark in value.lower() for mark in "_.e"):
        try:
            number = int(value)
        except ValueError:
            pass
        else:
            if _INT64[0] <= number <= _INT64[1]:
                return ("int64", number)
    try:
        return ("float64", float(value))
    except ValueError:
        return ("string", value)


def meta_from_attributes(attributes: str) -> tuple[dict[str, list[MetaValue]], str | None]:
    """The v2 meta of v1 attribute XML, and why it is empty when the text could not be read.

    Returns
    -------
    meta:
        Name -> typed values, in the order the names first appear (repeated names merge).
    problem:
        None, or what kept the attributes out (not XML, not ``ismrmrdMeta``).
    """
    if not attributes:
        return {}, None
    try:
        root = ET.fromstring(attributes)
    except (ET.ParseError, ValueError, LookupError) as exc:
        return {}, f"not XML ({' '.join(str(exc).split())})"
    if root.tag != "ismrmrdMeta":
        return {}, f"the root element is <{root.tag}>, not <ismrmrdMeta>"
    meta: dict[str, list[MetaValue]] = {}
    for entry in root.findall("meta"):
        name = entry.findtext("name") or ""
        values = [_typed(node.text or "") for node in entry.findall("value")]
        meta.setdefault(name, []).extend(values)
    return meta, None


def _element(tag: str, text: str) -> str:
    """``<tag>text</tag>`` with ``&``, ``<``, ``>`` escaped; ``<tag />`` when empty (as
    ElementTree writes it)."""
    if not text:
        return f"<{tag} />"
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f"<{tag}>{escaped}</{tag}>"


def meta_to_attributes(meta: dict[str, list[MetaValue]]) -> str:
    """v1 attribute XML of v2 meta ("" for none), as ``ismrmrd.Meta.serialize`` writes it."""
    if not meta:
        return ""
    parts = [_DECLARATION, "<ismrmrdMeta>"]
    for name, values in meta.items():
        parts.append("<meta>" + _element("name", str(name)))
        parts.extend(_element("value", str(value)) for _, value in values)
        parts.append("</meta>")
    parts.append("</ismrmrdMeta>")
    return "".join(parts)
