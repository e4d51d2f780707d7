"""What a conversion between the generations cannot carry, named once per kind.

MRD v1 and v2 do not hold exactly the same things: v1 has TEXT messages and NDArrays of
eight types, v2 has intermediate items (buckets, recon data, image arrays) and optional
fields that may be absent.  Nothing is dropped silently: every converter records what it
leaves out here, and the first occurrence of each kind reaches the user as one warning.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Notes"]


class Notes:
    """Kinds of loss seen so far, each with its count and one line of text.

    Parameters
    ----------
    warn:
        Called with the text of each kind the first time it occurs (a command prints it as a
        warning); None only collects.
    fields:
        Whether field-level losses (an absent v2 field that v1 writes as 0, a v1 field the
        v2 mapping leaves out) are recorded too; item-level ones (a whole message or item
        that has no counterpart) always are.
    """

    def __init__(self, warn: Callable[[str], None] | None = None, *, fields: bool = True):
        self._warn = warn
        self.fields = fields
        self.counts: dict[str, int] = {}
        self.texts: dict[str, str] = {}

    def item(self, kind: str, text: str) -> None:
        """A whole message or item that the other generation has no place for."""
        self._add(kind, text)

    def field(self, kind: str, text: str) -> None:
        """A field whose value the other generation does not carry (or not exactly)."""
        if self.fields:
            self._add(kind, text)

    def _add(self, kind: str, text: str) -> None:
        count = self.counts.get(kind, 0)
        self.counts[kind] = count + 1
        if not count:
            self.texts[kind] = text
            if self._warn is not None:
                self._warn(text)

    def __bool__(self) -> bool:
        return bool(self.counts)

    def kinds(self) -> list[str]:
        """The kinds recorded, in the order they first occurred."""
        return list(self.counts)

    def lines(self) -> list[str]:
        """One line per kind, in the order they first occurred (for a command that reports
        them at the end, once it has succeeded)."""
        return [self.texts[kind] for kind in self.counts]
