"""Kernel options (``--recon-option KEY=VALUE``): declared once per kernel, parsed by one helper.

Each bundled kernel lists its options in a module-level ``OPTIONS`` table of
:class:`KernelOption` (name, default, meaning, parser).  :func:`parse_options` turns the
plan's free-form strings into typed values and rejects unknown keys with a message that lists
the known ones, so a typo (``lamda=0.1``) is an error at start-up instead of a silently
ignored setting.  :data:`COMMON_OPTIONS` are understood by every kernel because the engine
acts on them before the kernel runs (prewhitening).

A user kernel may define its own ``OPTIONS`` table the same way; without one its options are
passed through unchecked (the kernel parses them itself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from parallel_recon.errors import UsageError

__all__ = [
    "COMMON_OPTIONS",
    "KernelOption",
    "choice",
    "describe_options",
    "option_table",
    "parse_options",
    "positive_int",
    "switch",
    "non_negative_float",
]


@dataclass(frozen=True)
class KernelOption:
    """One ``--recon-option``: its name, default text, meaning and parser (text -> value)."""

    name: str
    default: str
    meaning: str
    parse: Callable[[str], Any]


def switch(text: str) -> bool:
    """``on``/``off`` (also ``true``/``false``, ``yes``/``no``, ``1``/``0``)."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ValueError("expected on or off")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("expected a positive integer")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise ValueError("expected a finite number >= 0")
    return value


def choice(*values: str) -> Callable[[str], str]:
    """A parser that accepts exactly one of ``values``."""

    def parse(text: str) -> str:
        if text not in values:
            raise ValueError(f"expected {' or '.join(values)}")
        return text

    return parse


COMMON_OPTIONS: tuple[KernelOption, ...] = (
    KernelOption(
        "prewhiten",
        "on",
        "whiten the coils with the noise scan's covariance (when the stream or --noise has one)",
        switch,
    ),
)
"""Options every bundled kernel accepts; the engine applies them before the kernel runs."""


def option_table(*groups: Iterable[KernelOption]) -> dict[str, KernelOption]:
    """Name -> option from several groups; a later group's entry replaces an earlier one."""
    table: dict[str, KernelOption] = {}
    for group in groups:
        for option in group:
            table[option.name] = option
    return table


def describe_options(table: Mapping[str, KernelOption]) -> str:
    """``combine=adaptive|rss (default adaptive), lambda=... `` for error messages and help."""
    return ", ".join(f"{o.name} (default {o.default or 'none'})" for o in table.values())


def parse_options(
    options: Mapping[str, str], table: Mapping[str, KernelOption], kernel: str
) -> dict[str, Any]:
    """Typed values of every option in ``table`` (defaults filled in).

    Raises
    ------
    UsageError
        An unknown key (the message lists the known ones) or a value its parser rejects.
    """
    unknown = sorted(set(options) - set(table))
    if unknown:
        raise UsageError(
            f"--recon-option {unknown[0]}: the {kernel} kernel has no such option; "
            f"known options: {describe_options(table)}"
        )
    values: dict[str, Any] = {}
    for name, option in table.items():
        text = options.get(name, option.default)
        try:
            values[name] = option.parse(text)
        except ValueError as exc:
            raise UsageError(f"--recon-option {name}={text}: {exc} ({option.meaning})") from None
    return values
