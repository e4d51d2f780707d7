"""XML header helpers: values against an ElementTree reading of the same XML, clear errors."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_cli
from reference_recon import Synthetic, header_message, synthetic_header

from parallel_recon.engine.plan import plan_from_header, receiver_channels, units_per_repetition
from parallel_recon.errors import HeaderError
from parallel_recon.protocol import Header, StreamReader

NS = {"m": "http://www.ismrm.org/ISMRMRD"}


def golden_xml(golden: Path) -> str:
    with (golden / "phantom_m128_c8_noise.stream").open("rb") as source:
        first = next(iter(StreamReader(source)))
    assert isinstance(first, Header)
    return first.xml


def _number(node: ET.Element, path: str) -> float:
    found = node.find(path, NS)
    assert found is not None and found.text is not None, path
    return float(found.text)


def expected_space(encoding: ET.Element) -> dict[str, tuple[float, ...]]:
    """What the XML says, read with ElementTree (independent of ismrmrd.xsd)."""
    result: dict[str, tuple[float, ...]] = {}
    for name, path in (("encoded", "m:encodedSpace"), ("recon", "m:reconSpace")):
        result[f"{name}_matrix"] = tuple(
            _number(encoding, f"{path}/m:matrixSize/m:{a}") for a in "xyz"
        )
        result[f"{name}_fov"] = tuple(
            _number(encoding, f"{path}/m:fieldOfView_mm/m:{a}") for a in "xyz"
        )
    for axis, limit in (("k1", "kspace_encoding_step_1"), ("k2", "kspace_encoding_step_2")):
        node = encoding.find(f"m:encodingLimits/m:{limit}", NS)
        if node is None:
            n = int(result["encoded_matrix"][1 if axis == "k1" else 2])
            result[f"{axis}_limits"] = (0, n - 1, n // 2)
        else:
            result[f"{axis}_limits"] = tuple(
                _number(node, f"m:{f}") for f in ("minimum", "maximum", "center")
            )
    return result


def check_plan(xml: str) -> None:
    plan = plan_from_header(xml, output="phase", series_index=3, options={"a": "b"})
    encodings = ET.fromstring(xml).findall("m:encoding", NS)
    assert len(plan.spaces) == len(encodings) >= 1
    for space, encoding in zip(plan.spaces, encodings, strict=True):
        for name, value in expected_space(encoding).items():
            assert getattr(space, name) == value, name
        trajectory = encoding.find("m:trajectory", NS)
        assert trajectory is not None
        assert space.trajectory == trajectory.text
    assert (plan.output, plan.series_index, dict(plan.options)) == ("phase", 3, {"a": "b"})
    assert plan.header_xml == xml


def test_plan_of_golden_header(golden: Path) -> None:
    check_plan(golden_xml(golden))


def test_plan_of_3d_partial_fourier_header() -> None:
    check_plan(
        synthetic_header(Synthetic(encoded=(32, 16, 8), recon=(16, 16, 8), k1_range=(3, 15)))
    )


def test_missing_limits_default_to_the_full_matrix(golden: Path) -> None:
    xml = golden_xml(golden)
    start, end = xml.index("<encodingLimits>"), xml.index("</encodingLimits>")
    stripped = xml[:start] + xml[end + len("</encodingLimits>") :]
    stripped = stripped.replace("</reconSpace>", "</reconSpace><encodingLimits/>")
    (space,) = plan_from_header(stripped).spaces
    y, z = space.encoded_matrix[1], space.encoded_matrix[2]
    assert space.k1_limits == (0, y - 1, y // 2)
    assert space.k2_limits == (0, z - 1, z // 2)


def _with_limits(**maxima: int) -> str:
    xml = synthetic_header(Synthetic())
    extra = "".join(
        f"<{name}><minimum>0</minimum><maximum>{value}</maximum><center>0</center></{name}>"
        for name, value in maxima.items()
    )
    for name in ("slice", "contrast"):
        xml = re.sub(f"<{name}>.*?</{name}>", "", xml, flags=re.DOTALL)
    return xml.replace("</kspace_encoding_step_2>", "</kspace_encoding_step_2>" + extra, 1)


@pytest.mark.parametrize(
    "maxima",
    [{}, {"slice": 4}, {"slice": 2, "contrast": 1}, {"phase": 3, "set": 1, "slice": 1}],
)
def test_units_per_repetition_is_the_product_of_counters(maxima: dict[str, int]) -> None:
    xml = _with_limits(**maxima)
    expected = 1
    for value in maxima.values():
        expected *= value + 1
    assert units_per_repetition(xml) == expected


def test_units_per_repetition_sums_over_encodings() -> None:
    xml = _with_limits(slice=2)
    start, end = xml.index("<encoding>"), xml.index("</encoding>") + len("</encoding>")
    two = (
        xml[:end]
        + xml[start:end].replace("<maximum>2</maximum>", "<maximum>4</maximum>")
        + xml[end:]
    )
    assert len(plan_from_header(two).spaces) == 2
    assert units_per_repetition(two) == 3 + 5


def test_receiver_channels(golden: Path) -> None:
    xml = golden_xml(golden)
    node = ET.fromstring(xml).find("m:acquisitionSystemInformation/m:receiverChannels", NS)
    assert node is not None and node.text is not None
    assert receiver_channels(xml) == int(node.text)
    assert receiver_channels(synthetic_header(Synthetic())) is None


BAD_HEADERS = {
    "empty": (lambda xml: "", "empty"),
    "not XML": (lambda xml: "this is not xml", "parse error"),
    "no encoding": (
        lambda xml: xml[: xml.index("<encoding>")] + xml[xml.index("</encoding>") + 11 :],
        "<encoding>",
    ),
    "no encodedSpace": (
        lambda xml: (
            xml[: xml.index("<encodedSpace>")]
            + xml[xml.index("</encodedSpace>") + len("</encodedSpace>") :]
        ),
        "<encodedSpace>",
    ),
    "no encoded matrixSize": (
        lambda xml: xml.replace("<matrixSize><x>32</x><y>16</y><z>1</z></matrixSize>", "", 1),
        "<matrixSize>",
    ),
    "matrix not a number": (lambda xml: xml.replace("<x>32</x>", "<x>many</x>", 1), "many"),
    "zero matrix": (lambda xml: xml.replace("<y>16</y>", "<y>0</y>", 1), "positive"),
}


@pytest.mark.parametrize("case", sorted(BAD_HEADERS))
def test_bad_header_is_one_clear_error(case: str) -> None:
    change, word = BAD_HEADERS[case]
    xml = change(synthetic_header(Synthetic()))
    with pytest.raises(HeaderError, match="XML header") as raised:
        plan_from_header(xml)
    message = str(raised.value)
    assert word in message
    assert "\n" not in message


@pytest.mark.parametrize("case", ["no encodedSpace", "matrix not a number"])
def test_bad_header_through_the_cli(case: str) -> None:
    change, word = BAD_HEADERS[case]
    stream = header_message(change(synthetic_header(Synthetic()))) + b"\x04\x00"
    proc = run_cli("mrd_stream_recon", "--workers", "1", input=stream, check=False, timeout=60)
    assert proc.returncode == 1, proc.stderr.decode()
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mrd_stream_recon: error: ") and word in lines[0]
    assert "Traceback" not in proc.stderr.decode()
