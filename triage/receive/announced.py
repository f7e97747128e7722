"""The instance counts a sender announces in the header of each instance it sends.

A modality or a PACS router may say how many instances are coming; a study whose counts are
all met is complete without waiting for its quiet period (the rule is
`triage.catalogue.announced`'s). Read, as DICOM defines them:

- the series' count: Number of Series Related Instances (0020,1209), a query/retrieve
  attribute that some routers and gateways put in the instances they forward, and, in a CT
  image, Images in Acquisition (0020,1002), the number of images of the acquisition (General
  Acquisition and General Image modules), which many CT scanners send and which counts a
  series made by one acquisition;
- the study's count: Number of Study Related Instances (0020,1208), a query/retrieve
  attribute, again as some routers forward it.

Images in Acquisition is not read from other images, nor from a CT image of several time
points (Number of Temporal Positions above 1): there it counts what one time point or one
location holds, not the series (a GE MR fMRI series of 150 images says 15 in every image).

A count that is there but cannot be right (not an integer, below one, several values, two
series attributes that disagree) is `WRONG_COUNT`, and the study then waits for its quiet period.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from triage.attributes import positive_number, readable_text
from triage.catalogue import WRONG_COUNT

SERIES_COUNTS = ("NumberOfSeriesRelatedInstances",)
#: in a CT image of one time point
CT_SERIES_COUNTS = ("NumberOfSeriesRelatedInstances", "ImagesInAcquisition")
STUDY_COUNTS = ("NumberOfStudyRelatedInstances",)


@dataclass(frozen=True)
class AnnouncedCounts:
    """What one instance says: None when it announces nothing, `WRONG_COUNT`, or a count."""

    series: int | None
    study: int | None


def announced_counts(ds: Dataset) -> AnnouncedCounts:
    """The series' and the study's instance counts the instance announces; never raises."""
    return AnnouncedCounts(_count(ds, _series_counts(ds)), _count(ds, STUDY_COUNTS))


def _series_counts(ds: Dataset) -> tuple[str, ...]:
    if readable_text(ds, "Modality").strip() != "CT":
        return SERIES_COUNTS
    time_points = positive_number(readable_text(ds, "NumberOfTemporalPositions"))
    return SERIES_COUNTS if time_points is not None and time_points > 1 else CT_SERIES_COUNTS


def _count(ds: Dataset, keywords: tuple[str, ...]) -> int | None:
    said = {value for value in (_value(ds, k) for k in keywords) if value is not None}
    if not said:
        return None
    return said.pop() if len(said) == 1 else WRONG_COUNT


def _value(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
    except Exception:  # pydicom raises many types on corrupt elements
        return WRONG_COUNT
    if value is None or value == "":
        return None  # absent, or empty (these attributes are optional)
    try:
        number = int(value) if isinstance(value, int) else int(str(value).strip())
    except ValueError:  # several values, a decimal, text
        return WRONG_COUNT
    return number if 0 < number < 2**31 else WRONG_COUNT
