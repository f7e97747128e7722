"""The header values the receiver keeps for series selection: read from classic and enhanced
images, bounded, and never a reason to refuse an instance."""

from __future__ import annotations

import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from support.factories import phantom_ct_series

from triage.catalogue import InstanceRecord
from triage.receive.receiver import describe_instance


def one_image(**overrides: object) -> Dataset:
    (ds,) = phantom_ct_series("headers", 0, (8, 8, 1), **overrides)
    return ds


def describe(ds: Dataset) -> InstanceRecord:
    return describe_instance(ds, str(ds.file_meta.TransferSyntaxUID), 100)


def test_classic_ct_values() -> None:
    ds = one_image(convolution_kernel=["Hr38", "3"], slice_thickness=0.75, contrast_agent="IOMERON")
    got = describe(ds)
    assert (got.convolution_kernel, got.slice_thickness, got.contrast_agent, got.frames) == (
        "Hr38\\3",
        0.75,
        "IOMERON",
        1,
    )


def test_enhanced_image_values_come_from_its_functional_groups() -> None:
    ds = one_image()
    del ds.ConvolutionKernel, ds.SliceThickness
    reconstruction, measures, shared = Dataset(), Dataset(), Dataset()
    reconstruction.ConvolutionKernel = "FC26"
    measures.SliceThickness = "0.5"
    shared.CTReconstructionSequence = [reconstruction]
    shared.PixelMeasuresSequence = [measures]
    ds.SharedFunctionalGroupsSequence = [shared]
    agent = Dataset()
    agent.CodeMeaning = "Iohexol"
    ds.ContrastBolusAgentSequence = [agent]
    ds.NumberOfFrames = "1"
    got = describe(ds)
    assert (got.convolution_kernel, got.slice_thickness, got.contrast_agent) == (
        "FC26",
        0.5,
        "Iohexol",
    )


@pytest.mark.parametrize("thickness", [b"abc", b"-1", b"0", b"", b"nan"])
def test_an_odd_slice_thickness_reads_as_unknown(thickness: bytes) -> None:
    ds = one_image()
    tag = Tag("SliceThickness")
    ds[tag] = RawDataElement(tag, "DS", len(thickness), thickness, 0, False, True)
    assert describe(ds).slice_thickness is None


def test_long_values_are_cut_to_the_column_size() -> None:
    got = describe(one_image(convolution_kernel="K" * 16, contrast_agent="A" * 64))
    assert len(got.convolution_kernel) <= 64 and len(got.contrast_agent) == 64
    ds = one_image()
    ds.ConvolutionKernel = ["K" * 16] * 10  # 10 values: 170 characters joined
    assert len(describe(ds).convolution_kernel) == 64
