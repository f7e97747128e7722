"""Bundle zips: the one the object store keeps of a version, and unpacking one safely.

The zip of a version is byte for byte the same for the same content (fixed file times and
modes, files in sorted order), so storing a version twice stores the same object. Unpacking
refuses paths that would leave the target folder.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable
from pathlib import Path

from triage.errors import ModelError

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def bundle_zip(folder: Path, files: Iterable[str], extra: dict[str, bytes]) -> bytes:
    """The files of a bundle folder (relative paths, in the order given) and ``extra`` files
    (name -> bytes, e.g. its options as triage.json) as one reproducible zip."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in files:
            _add_to_zip(zf, rel, (folder / rel).read_bytes())
        for name, data in extra.items():
            _add_to_zip(zf, name, data)
    return buffer.getvalue()


def _add_to_zip(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def unpack_zip(data: bytes, target: Path, where: str) -> Path:
    """Unpack a bundle zip into target; the folder holding configs/metadata.json."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for member in zf.infolist():
                parts = Path(member.filename).parts
                if member.filename.startswith("/") or ".." in parts:
                    raise ModelError(f"{where} holds an unsafe path {member.filename!r}")
            zf.extractall(target)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{where} is not a readable zip file: {exc}") from None
    if (target / "configs" / "metadata.json").is_file():
        return target
    roots = [d for d in target.iterdir() if (d / "configs" / "metadata.json").is_file()]
    if len(roots) != 1:
        raise ModelError(
            f"{where} holds no MONAI bundle: expected configs/metadata.json at its top or in "
            "one top folder"
        )
    return roots[0]
