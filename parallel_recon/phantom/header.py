"""The ISMRMRD XML header of a simulated scan, built with ismrmrd-python's schema model.

Building the header through ``ismrmrd.xsd``'s classes (rather than a text template) means the
result is valid against ismrmrd.xsd by construction, and the field names are checked by mypy.
"""

from __future__ import annotations

import uuid

import ismrmrd.xsd as xsd

from .geometry import FOV_MM, PARTITION_THICKNESS_MM, SLICE_THICKNESS_MM
from .shepp_logan import ECHO_SPACING
from .spec import NOISE_BANDWIDTH, PhantomSpec, first_line, readout_count, readout_window

__all__ = [
    "FIELD_STRENGTH_T",
    "TE0_MS",
    "header_xml",
    "repetition_time_ms",
]

FIELD_STRENGTH_T = 1.5
LARMOR_HZ_PER_T = 42_577_478.5
TE0_MS = 5.0
"""Echo time of contrast 0; contrast ``c`` has ``TE0_MS + c * ECHO_SPACING``."""


def repetition_time_ms(spec: PhantomSpec) -> float:
    """TR: long enough for every echo plus 5 ms."""
    return TE0_MS + (spec.contrasts - 1) * ECHO_SPACING + 5.0


_TRAJECTORY_TYPES = {
    "cartesian": xsd.trajectoryType.CARTESIAN,
    "radial": xsd.trajectoryType.RADIAL,
    "goldenangle": xsd.trajectoryType.GOLDENANGLE,
    "spiral": xsd.trajectoryType.SPIRAL,
}


def _limit(maximum: int, centre: int, minimum: int = 0) -> xsd.limitType:
    return xsd.limitType(minimum=minimum, maximum=maximum, center=centre)


def _calibration_mode(spec: PhantomSpec) -> xsd.calibrationModeType:
    if not spec.calibration_width:
        return xsd.calibrationModeType.OTHER
    if spec.calibration == "separate":
        return xsd.calibrationModeType.SEPARATE
    return xsd.calibrationModeType.EMBEDDED


def _encoding(spec: PhantomSpec) -> xsd.encodingType:
    depth = spec.partitions * PARTITION_THICKNESS_MM if spec.is_3d else SLICE_THICKNESS_MM
    encoded = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=spec.readout, y=spec.matrix, z=spec.partitions),
        fieldOfView_mm=xsd.fieldOfViewMm(x=FOV_MM * spec.oversampling, y=FOV_MM, z=depth),
    )
    recon = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=spec.matrix, y=spec.matrix, z=spec.partitions),
        fieldOfView_mm=xsd.fieldOfViewMm(x=FOV_MM, y=FOV_MM, z=depth),
    )
    if spec.is_cartesian:
        step_1 = _limit(spec.matrix - 1, spec.matrix // 2, first_line(spec))
    else:
        readouts = readout_count(spec)  # spokes / interleaves are counted by encode step 1
        step_1 = _limit(readouts - 1, readouts // 2)
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_0=_limit(spec.readout - 1, spec.readout // 2, readout_window(spec)[0]),
        kspace_encoding_step_1=step_1,
        kspace_encoding_step_2=_limit(spec.partitions - 1, spec.partitions // 2),
        average=_limit(spec.averages - 1, 0),
        slice=_limit(spec.slices - 1, 0),
        contrast=_limit(spec.contrasts - 1, 0),
        phase=_limit(0, 0),
        repetition=_limit(spec.repetitions - 1, 0),
        set=_limit(0, 0),
        segment=_limit(0, 0),
    )
    encoding = xsd.encodingType(
        encodedSpace=encoded,
        reconSpace=recon,
        encodingLimits=limits,
        trajectory=_TRAJECTORY_TYPES[spec.trajectory],
    )
    if spec.acceleration > 1 or spec.acceleration_2 > 1:
        encoding.parallelImaging = xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(
                kspace_encoding_step_1=spec.acceleration,
                kspace_encoding_step_2=spec.acceleration_2,
            ),
            calibrationMode=_calibration_mode(spec),
        )
    return encoding


def header_xml(spec: PhantomSpec) -> str:
    """The scan's ISMRMRD XML header (valid against ismrmrd.xsd).

    Encoded space: ``matrix * oversampling`` x ``matrix`` x ``partitions`` over
    ``oversampling * 300`` x 300 mm x slab (or slice) thickness; recon space ``matrix`` x
    ``matrix`` x ``partitions``.  The measurement ID is derived from the seed so that the same
    spec always gives the same bytes.
    """
    measurement_id = str(uuid.UUID(int=(spec.seed * 0x9E3779B97F4A7C15) % (1 << 128)))
    header = xsd.ismrmrdHeader(
        subjectInformation=xsd.subjectInformationType(patientID="Shepp-Logan phantom"),
        measurementInformation=xsd.measurementInformationType(
            measurementID=measurement_id,
            patientPosition=xsd.patientPositionType.HFS,
            protocolName="parallel-recon phantom",
            sequenceName=f"{spec.trajectory}_gre",
        ),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="parallel-recon",
            systemModel="simulator",
            systemFieldStrength_T=FIELD_STRENGTH_T,
            receiverChannels=spec.coils,
            relativeReceiverNoiseBandwidth=NOISE_BANDWIDTH if spec.noise_calibration else None,
            institutionName="parallel-recon",
        ),
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=round(FIELD_STRENGTH_T * LARMOR_HZ_PER_T)
        ),
        encoding=[_encoding(spec)],
        sequenceParameters=xsd.sequenceParametersType(
            TR=[repetition_time_ms(spec)],
            TE=[TE0_MS + c * ECHO_SPACING for c in range(spec.contrasts)],
            flipAngle_deg=[15.0],
            sequence_type="Flash",
        ),
    )
    return str(xsd.ToXML(header))
