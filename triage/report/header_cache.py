"""The headers of the images a worker has just analysed, kept for the documents it writes next.

Assembling a volume reads and parses every instance of the series; the report that follows
needs their headers again (the SR's evidence, the KOS's key images, the SEG's source frames).
Reading them back from the store - 200 files of half a megabyte for a thin-slice CT - was most
of the report's time. The analysis hands its parsed datasets here, pixel data dropped (the
volume has the pixels), and the report takes them by SOPInstanceUID; whatever is not here is
read from the store as before. Bounded: the images of the last few series only.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from pydicom.dataset import Dataset

from triage.attributes import text_value

#: about four thin-slice series; a header without pixel data is a few kilobytes
DEFAULT_CAPACITY = 2000
_PIXELS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


class HeaderCache:
    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self.capacity = capacity
        self._headers: OrderedDict[str, Dataset] = OrderedDict()
        self._lock = threading.Lock()

    def keep(self, datasets: Iterable[Dataset]) -> None:
        """Keep these (just decoded) datasets as headers: their pixel data is dropped."""
        with self._lock:
            for ds in datasets:
                uid = text_value(ds, "SOPInstanceUID")
                if not uid:
                    continue
                for keyword in _PIXELS:
                    if keyword in ds:
                        del ds[keyword]
                self._headers[uid] = ds
                self._headers.move_to_end(uid)
            while len(self._headers) > self.capacity:
                self._headers.popitem(last=False)

    def get(self, sop_instance_uid: str) -> Dataset | None:
        with self._lock:
            return self._headers.get(sop_instance_uid)
