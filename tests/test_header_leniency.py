"""Headers written by other tools bend ismrmrd.xsd; the recon reconstructs them anyway.

A capitalised enumeration, a missing recon space, missing encoding limits, an empty optional
number: each gives the images the schema-following header gives (or the ones its fallback
implies) and one warning line saying what was assumed.  What cannot be reconstructed is one
error line: a spiral or radial trajectory given to a Cartesian kernel is named, not reported
as a readout mismatch.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from conftest import run_cli

from parallel_recon.phantom import PhantomSpec, iter_messages
from parallel_recon.protocol import Acquisition, Header, Image, StreamReader, StreamWriter

RECON = "mrd_stream_recon"


def stream_with(change: object = None, readout: int | None = None) -> bytes:
    """The 16x16 2-coil phantom (encoded 32x16), its XML changed by ``change`` and, with
    ``readout``, every line replaced by one of that many samples with a 2D trajectory."""
    sink = io.BytesIO()
    with StreamWriter(sink) as writer:
        for msg in iter_messages(PhantomSpec(matrix=16, coils=2)):
            if isinstance(msg, Header) and callable(change):
                msg = Header(change(msg.xml))
            elif isinstance(msg, Acquisition) and readout:
                data = np.ones((2, readout), np.complex64)
                traj = np.zeros((readout, 2), np.float32)
                msg = Acquisition.from_arrays(data, traj, msg.head)
            writer.write(msg)
    return sink.getvalue()


def recon(stream: bytes, *args: str, check: bool = True) -> tuple[int, list[Image], list[str]]:
    proc = run_cli(RECON, "--workers", "1", *args, input=stream, check=check)
    err = proc.stderr.decode()
    assert "Traceback" not in err, err
    reader = StreamReader(io.BytesIO(proc.stdout), require_close=False)
    images = [m for m in reader if isinstance(m, Image)]
    return proc.returncode, images, err.strip().splitlines()


def _drop(element: str) -> object:
    return lambda xml: re.sub(f"<{element}>.*?</{element}>", "", xml, count=1, flags=re.DOTALL)


@pytest.fixture(scope="module")
def baseline() -> Image:
    code, images, lines = recon(stream_with())
    assert code == 0 and lines == [] and len(images) == 1
    return images[0]


BENT = {
    "capitalised-trajectory": (
        lambda xml: xml.replace(">cartesian</trajectory>", ">Cartesian</trajectory>"),
        "<trajectory> 'Cartesian' read as 'cartesian'",
    ),
    "no-encoding-limits": (_drop("encodingLimits"), "has no <encodingLimits>"),
    "empty-receiver-channels": (
        lambda xml: re.sub(r"<receiverChannels>\d+<", "<receiverChannels><", xml),
        "<receiverChannels> 'empty' ignored",
    ),
    "no-namespace-upper-case-trajectory": (
        lambda xml: xml.replace(' xmlns="http://www.ismrm.org/ISMRMRD"', "").replace(
            ">cartesian<", ">CARTESIAN<"
        ),
        "'CARTESIAN' read as 'cartesian'",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BENT))
def test_bent_header_gives_the_same_images_and_one_warning(case: str, baseline: Image) -> None:
    change, words = BENT[case]
    code, images, lines = recon(stream_with(change))
    assert code == 0 and len(images) == 1
    assert len(lines) == 1 and lines[0].startswith(f"{RECON}: warning: XML header bends"), lines
    assert words in lines[0], lines[0]
    np.testing.assert_array_equal(images[0].data, baseline.data)


def test_missing_recon_space_reconstructs_the_encoded_space(baseline: Image) -> None:
    code, images, lines = recon(stream_with(_drop("reconSpace")))
    assert code == 0 and len(lines) == 1, lines
    assert "has no <reconSpace>: recon space = encoded space" in lines[0]
    (image,) = images
    assert image.data.shape == (1, 1, 16, 32)  # the encoded 32 x 16, oversampling kept
    centre = image.data[..., 8:24]  # the field of view the recon space would have kept
    np.testing.assert_allclose(centre, baseline.data, rtol=1e-5, atol=1e-6 * baseline.data.max())


@pytest.mark.parametrize("trajectory", ["spiral", "radial"])
@pytest.mark.parametrize("kernel", ["cartesian", "grappa"])
def test_non_cartesian_data_is_refused_by_name_by_cartesian_kernels(
    trajectory: str, kernel: str
) -> None:
    def change(xml: str) -> str:
        return xml.replace(">cartesian<", f">{trajectory}<")

    stream = stream_with(change, readout=100)
    code, images, lines = recon(stream, "--recon", kernel, check=False)
    assert code == 1 and images == [] and len(lines) == 1, lines
    assert f"encoding 0 has a {trajectory} trajectory" in lines[0]
    assert "Cartesian data only" in lines[0] and "readout" not in lines[0]
    assert "--recon nufft" in lines[0]


def test_a_header_without_an_encoded_matrix_is_refused() -> None:
    def change(xml: str) -> str:
        return re.sub(r"<encodedSpace>.*?</encodedSpace>", "", xml, count=1, flags=re.DOTALL)

    code, _, lines = recon(stream_with(change), check=False)
    assert code == 1 and len(lines) == 1 and "has no <encodedSpace>" in lines[0], lines
