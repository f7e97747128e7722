"""The headers the analysis parsed are what the report uses; the store is read only for what
is not kept; the SR's library lists the volume's two ends and its evidence every image."""

from __future__ import annotations

import io

from support.factories import phantom_ct_series

from triage.report.documents import _headers
from triage.report.header_cache import HeaderCache
from triage.report.headers import volume_ends
from triage.store import instance_key


class CountingStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []

    def get(self, key: str) -> bytes:
        self.reads.append(key)
        return self.objects[key]


def test_kept_headers_are_used_and_the_rest_read_from_the_store() -> None:
    series = phantom_ct_series("cache", 1, (16, 16, 6))
    store = CountingStore()
    keys = []
    for ds in series:
        key = instance_key(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        store.objects[key] = buffer.getvalue()
        keys.append(key)
    cache = HeaderCache(capacity=4)
    cache.keep(series)  # as the analysis hands them over: decoded, pixels no longer needed
    assert all("PixelData" not in ds for ds in series)
    headers = _headers(store, keys, cache)  # type: ignore[arg-type]
    assert [h.SOPInstanceUID for h in headers] == [ds.SOPInstanceUID for ds in series]
    assert store.reads == keys[:2]  # bounded: the two oldest were let go
    assert headers[2] is series[2]


def test_the_library_images_are_the_two_ends_of_the_volume() -> None:
    series = phantom_ct_series("ends", 2, (16, 16, 5))
    shuffled = [series[3], series[0], series[4], series[2], series[1]]
    ends = volume_ends(shuffled)
    positions = sorted(float(ds.ImagePositionPatient[2]) for ds in series)
    assert [float(e.ImagePositionPatient[2]) for e in ends] == [positions[0], positions[-1]]
    assert volume_ends(series[:1]) == series[:1]
