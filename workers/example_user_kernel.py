"""Example user kernel: the Cartesian recon with a Hann k-space filter.

How to write your own kernel
----------------------------
A kernel is a Python file that defines one function::

    def reconstruct(kspace: np.ndarray, context: ReconContext) -> list[Image]: ...

- ``kspace`` is complex64 ``[k2, k1, coils, k0]`` for one unit (one slice, contrast, phase,
  set and repetition of one encoding space): lines already placed by their encode steps with
  the k-space centre at ``[k2 // 2, k1 // 2, :, k0 // 2]``, repeated averages already
  averaged, zeros where nothing was sampled, noise/navigator/calibration-only lines left out.
  It is a view of shared memory that the engine reuses after the call: read it, copy it if
  you must change it, and keep no reference to it.
- ``context.plan`` holds the XML header text, the encoding spaces (matrices, FOV, limits),
  ``output`` ('magnitude', 'phase' or 'complex'), ``series_index`` and the free-form
  ``options`` given as ``--recon-option KEY=VALUE``; ``context.unit`` says which unit this is;
  ``context.space`` is its encoding space and ``context.reference_head`` the acquisition
  header whose geometry, counters and time stamps the images should carry.
- Return complete :class:`parallel_recon.protocol.Image` messages.  Leave ``image_index`` at
  0: the engine numbers images in output order, so the output bytes do not depend on the
  number of workers.  ``parallel_recon.workers.image_header.make_image`` fills the header and meta
  attributes for you.

Run it with ``mrd_stream_recon --recon path/to/module.py < raw.bin > images.bin``: the engine
imports the file once and runs ``reconstruct`` in every worker process, in parallel over
units.  Keep the function pure (no global state that changes between calls) and single
threaded: the engine already runs one worker per core.

This example
------------
Ringing around sharp edges comes from the abrupt end of the sampled k-space.  Multiplying
k-space by a smooth window trades a little resolution for less ringing.  The window here is
a separable Hann (cos^2) window along k0, k1 and k2, centred on the k-space centre.  Along k1
and k2 its half-width is the largest distance from the centre to a sampled encode step in the
header's encoding limits, so with partial Fourier the window follows the sampled side of
k-space instead of tapering in the empty part.  Everything after the filter is the default
Cartesian recon, reused step by step from :mod:`parallel_recon.workers.cartesian`.
"""

from __future__ import annotations

import numpy as np

from parallel_recon.protocol import Image
from parallel_recon.workers.api import ReconContext
from parallel_recon.workers.cartesian import HISTORY, images_from_coils, to_image_space

__all__ = ["hann_window", "reconstruct"]


def hann_window(n: int, centre: int, half_width: int) -> np.ndarray:
    """float32 ``[n]``: ``cos^2(pi/2 * (k - centre) / half_width)`` inside, 0 outside."""
    distance = (np.arange(n) - centre) / max(half_width, 1)
    window = np.where(np.abs(distance) < 1, np.cos(0.5 * np.pi * distance) ** 2, 0.0)
    return window.astype(np.float32)


def _half_width(limits: tuple[int, int, int]) -> int:
    minimum, maximum, centre = limits
    return max(centre - minimum, maximum - centre) + 1


def reconstruct(kspace: np.ndarray, context: ReconContext) -> list[Image]:
    """Hann-filtered Cartesian recon of one unit (see the module docstring)."""
    space = context.space
    k2n, k1n, _, k0n = kspace.shape
    w0 = hann_window(k0n, k0n // 2, k0n // 2 + 1)
    w1 = hann_window(k1n, k1n // 2, _half_width(space.k1_limits))
    w2 = hann_window(k2n, k2n // 2, _half_width(space.k2_limits))
    filtered = kspace * (w2[:, None, None, None] * w1[None, :, None, None] * w0)
    return images_from_coils(to_image_space(filtered, space), context, ("HANN", *HISTORY))
