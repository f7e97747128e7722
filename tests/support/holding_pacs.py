"""Orthanc that holds each SR it receives until the test lets it go: a delivery in flight that a
test can see, and kill a process in."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.orthanc import Orthanc

# While the "hold" file exists, Orthanc notes each SR it receives in the "arrived" file and then
# holds it, before it stores it and answers, until the test opens the "gate" FIFO for writing: a
# delivery in flight that the test sees and kills a process in. (Reading a FIFO blocks without a
# child process: a `sleep` started by os.execute would inherit the association's socket and keep
# it open after Orthanc itself is killed.)
HOLDING_FILTER = """
function ReceivedInstanceFilter(dicom, origin, info)
  if dicom.Modality == 'SR' then
    local hold = io.open('{hold}', 'r')
    if hold ~= nil then
      hold:close()
      local arrived = io.open('{arrived}', 'a')
      arrived:write(dicom.SOPInstanceUID .. '\\n')
      arrived:close()
      local gate = io.open('{gate}', 'r')
      gate:read('*a')
      gate:close()
    end
  end
  return true
end
"""


@dataclass
class HoldingPacs:
    """Orthanc with HOLDING_FILTER."""

    orthanc: Orthanc
    folder: Path
    config: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, folder: Path, ae_title: str) -> HoldingPacs:
        folder.mkdir(parents=True, exist_ok=True)
        pacs = cls(Orthanc(folder / "orthanc", ae_title=ae_title), folder)
        os.mkfifo(pacs.gate)
        script = folder / "hold.lua"
        script.write_text(
            HOLDING_FILTER.format(hold=pacs.hold, arrived=pacs.arrived, gate=pacs.gate)
        )
        pacs.config = {"LuaScripts": [str(script)]}
        pacs.orthanc.start(extra=pacs.config)
        return pacs

    @property
    def hold(self) -> Path:
        return self.folder / "hold"

    @property
    def arrived(self) -> Path:
        return self.folder / "arrived"

    @property
    def gate(self) -> Path:
        return self.folder / "gate"

    def arrived_uids(self) -> list[str]:
        return self.arrived.read_text().split() if self.arrived.exists() else []

    def release(self) -> None:
        """Stop holding: the SR in hand (if any) goes on, later ones are not held."""
        self.hold.unlink(missing_ok=True)
        for _ in range(10):
            try:
                fd = os.open(self.gate, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody is waiting at the gate
                return
            os.close(fd)
            time.sleep(0.1)

    def stop(self) -> None:
        self.release()
        self.orthanc.stop()
