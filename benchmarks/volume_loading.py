"""Series -> volume: this project against SimpleITK, MONAI's PydicomReader and naive pydicom.

One run, same files, same machine, readers interleaved. It reports the median time per reader,
the ratios against this project, and a geometry check on the real tilted, unevenly spaced GE
head CT: each reader's volume is sampled, through that reader's own affine, where chosen source
pixels lie in the patient, and the mean |HU error| against the source pixel is reported (a reader
that ignores tilt or uneven spacing puts the pixels in the wrong place).

    .venv/bin/python benchmarks/volume_loading.py                  # 140 x 512^2, 7 repeats
    .venv/bin/python benchmarks/volume_loading.py --slices 40 --size 256 --repeats 2   # smoke

The 140-slice series is the shared Philips head phantom CT (28 slices of 5 mm) re-sliced to
1 mm by linear interpolation, its real headers kept; without ../shared/data it is a synthetic
head phantom. Compressed copies (JPEG 2000 lossless, JPEG-LS lossless, RLE; JPEG lossless SV1 and
12-bit JPEG extended via dcmtk when installed) are read too, and a 3D MR series: 176 slices of
384 x 384 at 1 mm steps along the normal of the shared Siemens Trio MR image (oblique), its real
header kept, its pixels shifted by one column a slice. Each ratio is printed against its goal
(issue 14: 2x SimpleITK uncompressed, 1.2x compressed).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from triage.imaging.volume import AssemblyOptions, load_files  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "dicom"
PHANTOM = SHARED / "ct_head_phantom_philips_5mm"
MR_IMAGE = SHARED / "transfer_syntaxes_siemens" / "1.dcm"
MR_SLICES = 176
#: SimpleITK's time over this project's, per series: the goals of issue 14
GOALS = {"explicit-vr-little-endian": 2.0, "mr-3d-explicit-vr-little-endian": 2.0}
COMPRESSED_GOAL = 1.2
TILTED = SHARED / "ct_head_ge_tilt_uneven"
LPS_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# -- the series --------------------------------------------------------------------------------


def _resliced_phantom(out: Path, slices: int, size: int) -> str:
    """The Philips phantom re-sliced to ``slices`` slices (and ``size`` pixels), headers kept."""
    sources = []
    for path in sorted(PHANTOM.iterdir()):
        try:
            sources.append(pydicom.dcmread(path))
        except pydicom.errors.InvalidDicomError:
            continue
    sources = [ds for ds in sources if "PixelData" in ds]
    sources.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in sources])
    planes = np.stack([ds.pixel_array.astype(np.float32) for ds in sources])
    if size != planes.shape[1]:
        step = planes.shape[1] / size
        index = (np.arange(size) * step).astype(int)
        planes = planes[:, index][:, :, index]
    series = generate_uid()
    targets = np.linspace(z[0], z[-1], slices)
    for k, t in enumerate(targets):
        i = min(int(np.searchsorted(z, t, side="right") - 1), len(z) - 2)
        w = (t - z[i]) / (z[i + 1] - z[i])
        ds = copy.deepcopy(sources[i])
        pixels = np.rint(planes[i] * (1 - w) + planes[i + 1] * w).astype(ds.pixel_array.dtype)
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelSpacing = [float(v) * 512 / size for v in ds.PixelSpacing]
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID = series
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], round(float(t), 4)]
        ds.SliceThickness = round(float(targets[1] - targets[0]), 4)
        ds.PixelData = pixels.tobytes()
        ds.save_as(out / f"{k:04d}.dcm", enforce_file_format=True)
    return f"Philips head phantom CT re-sliced to {slices} x {size}^2 (real headers)"


def _mr_series(out: Path, slices: int) -> str:
    """A 3D MR series from the real Siemens MR header: ``slices`` slices 1 mm apart along its
    (oblique) normal, each the real image shifted by one more column."""
    source = pydicom.dcmread(MR_IMAGE)
    pixels = source.pixel_array
    row, col = (np.array(source.ImageOrientationPatient[i : i + 3], float) for i in (0, 3))
    normal = np.cross(row, col)
    origin = np.array(source.ImagePositionPatient, float)
    series = generate_uid()
    for k in range(slices):
        ds = copy.deepcopy(source)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]  # not a mosaic any more
        ds.MRAcquisitionType = "3D"
        ds.SliceThickness, ds.SpacingBetweenSlices = 1.0, 1.0
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [round(float(v), 4) for v in origin + k * normal]
        ds.PixelData = np.roll(pixels, k, axis=1).tobytes()
        ds.save_as(out / f"{k:04d}.dcm", enforce_file_format=True)
    rows, columns = pixels.shape
    return f"3D MR from the Siemens Trio MR header: {slices} x {rows} x {columns}, 1 mm, oblique"


def _synthetic(out: Path, slices: int, size: int) -> str:
    from triage.synthetic.phantom import head_phantom
    from triage.synthetic.series import write_series

    phantom = head_phantom(np.random.default_rng(1), (size, size, slices), (0.45, 0.45, 1.0), False)
    write_series(out, phantom.hu, phantom.spacing)
    return f"synthetic head phantom {slices} x {size}^2"


def _compressed(source: Path, out: Path, syntax: str) -> bool:
    out.mkdir(parents=True, exist_ok=True)
    tools = {"jpeg-lossless-sv1": ["dcmcjpeg", "+e1"], "jpeg-extended-12bit": ["dcmcjpeg", "+ee"]}
    for path in sorted(source.iterdir()):
        if syntax in tools:
            tool = shutil.which(tools[syntax][0])
            if tool is None:
                return False
            subprocess.run([tool, tools[syntax][1], str(path), str(out / path.name)], check=True)
            continue
        ds = pydicom.dcmread(path)
        uid = {"jpeg2000-lossless": JPEG2000Lossless, "jpeg-ls-lossless": JPEGLSLossless}.get(
            syntax, RLELossless
        )
        ds.compress(uid)
        ds.save_as(out / path.name, enforce_file_format=True)
    return True


# -- the readers -------------------------------------------------------------------------------
# each returns (array indexed [column, row, slice] in HU, affine voxel -> LPS mm)


def read_triage(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    volume = load_files(files, AssemblyOptions())
    return volume.array, volume.affine_lps


def read_simpleitk(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(Path(files[0]).parent)))
    image = reader.Execute()
    array = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.array(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return array, affine


def read_monai(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from monai.data import PydicomReader

    reader = PydicomReader()
    array, meta = reader.get_data(reader.read(str(Path(files[0]).parent)))
    return np.asarray(array), LPS_RAS @ np.asarray(meta["affine"], dtype=np.float64)


def read_naive(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """What a script would do: read all, sort by z, stack, rescale; spacing from two slices."""
    datasets = sorted(
        (pydicom.dcmread(f) for f in files), key=lambda ds: float(ds.ImagePositionPatient[2])
    )
    array = np.stack(
        [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in datasets],
        axis=-1,
    ).transpose(1, 0, 2)
    first = datasets[0]
    row, col = (np.array(first.ImageOrientationPatient[i : i + 3], float) for i in (0, 3))
    dy, dx = (float(v) for v in first.PixelSpacing)
    step = np.array(datasets[1].ImagePositionPatient, float) - np.array(first.ImagePositionPatient)
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row * dx, col * dy, step
    affine[:3, 3] = np.array(first.ImagePositionPatient, float)
    return array, affine


READERS: dict[str, Callable[[list[str]], tuple[np.ndarray, np.ndarray]]] = {
    "triage": read_triage,
    "simpleitk": read_simpleitk,
    "monai_pydicomreader": read_monai,
    "pydicom_naive": read_naive,
}


# -- measuring ---------------------------------------------------------------------------------


def time_readers(
    files: list[str], readers: list[str], repeats: int
) -> dict[str, dict[str, float | str]]:
    """Median and best wall time per reader, readers interleaved in rotating order."""
    times: dict[str, list[float]] = {name: [] for name in readers}
    failed: dict[str, str] = {}
    for name in readers:  # a warm-up each (imports, first-use set-up), not timed
        try:
            READERS[name](files)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    for r in range(repeats):
        order = readers[r % len(readers) :] + readers[: r % len(readers)]
        for name in order:
            if name in failed:
                continue
            start = time.perf_counter()
            READERS[name](files)
            times[name].append(time.perf_counter() - start)
    out: dict[str, dict[str, float | str]] = {}
    for name in readers:
        if name in failed:
            out[name] = {"error": failed[name]}
        else:
            out[name] = {
                "median_ms": round(statistics.median(times[name]) * 1000, 1),
                "best_ms": round(min(times[name]) * 1000, 1),
            }
    return out


def geometry_error(files: list[str], name: str, samples: int = 40) -> dict[str, float | str]:
    """Mean and max |HU error| at source pixel positions, sampled through the reader's affine."""
    try:
        array, affine = READERS[name](files)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    array = np.asarray(array, dtype=np.float32)
    inverse = np.linalg.inv(affine)
    rng = np.random.default_rng(11)
    errors = []
    for path in files:
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        row, col = (np.array(ds.ImageOrientationPatient[i : i + 3], float) for i in (0, 3))
        dy, dx = (float(v) for v in ds.PixelSpacing)
        for r, c in rng.integers(ds.Rows // 5, ds.Rows * 4 // 5, size=(samples, 2)):
            point = np.array(ds.ImagePositionPatient, float) + c * dx * row + r * dy * col
            i, j, z = (inverse @ [*point, 1.0])[:3]
            i, j = int(round(i)), int(round(j))
            if not (0 <= i < array.shape[0] and 0 <= j < array.shape[1]):
                errors.append(float("inf"))
                continue
            if not -0.01 <= z <= array.shape[2] - 0.99:
                errors.append(float("inf"))
                continue
            low = int(np.clip(np.floor(z), 0, array.shape[2] - 2))
            w = float(np.clip(z - low, 0, 1))
            value = (1 - w) * array[i, j, low] + w * array[i, j, low + 1]
            errors.append(abs(float(value) - float(hu[r, c])))
    finite = [e for e in errors if np.isfinite(e)]
    return {
        "mean_abs_hu_error": round(float(np.mean(finite)), 2) if finite else float("inf"),
        "max_abs_hu_error": round(float(np.max(finite)), 2) if finite else float("inf"),
        "outside_volume": len(errors) - len(finite),
        "samples": len(errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=140)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mr-slices", type=int, default=MR_SLICES)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")

    readers = list(READERS)
    result: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "processor": platform.processor() or platform.machine(),
            "load_average_before": [round(v, 2) for v in os.getloadavg()],
        },
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "repeats": args.repeats,
    }
    with tempfile.TemporaryDirectory(prefix="triage-volume-bench-") as tmp:
        plain = Path(tmp) / "explicit-le"
        plain.mkdir()
        if PHANTOM.is_dir():
            result["series"] = _resliced_phantom(plain, args.slices, args.size)
        else:
            result["series"] = _synthetic(plain, args.slices, args.size)
        files = sorted(str(p) for p in plain.iterdir())
        print(f"{result['series']}: {len(files)} files", flush=True)
        timings = {"explicit-vr-little-endian": time_readers(files, readers, args.repeats)}
        for syntax in (
            "jpeg2000-lossless",
            "jpeg-ls-lossless",
            "rle",
            "jpeg-lossless-sv1",
            "jpeg-extended-12bit",
        ):
            folder = Path(tmp) / syntax
            if not _compressed(plain, folder, syntax):
                print(f"{syntax}: skipped (encoder not installed)")
                continue
            compressed = sorted(str(p) for p in folder.iterdir())
            timings[syntax] = time_readers(compressed, ["triage", "simpleitk"], args.repeats)
            print(f"{syntax}: {timings[syntax]}", flush=True)
        if MR_IMAGE.is_file():
            mr = Path(tmp) / "mr-3d"
            mr.mkdir()
            result["mr_series"] = _mr_series(mr, args.mr_slices)
            mr_files = sorted(str(p) for p in mr.iterdir())
            key = "mr-3d-explicit-vr-little-endian"
            timings[key] = time_readers(mr_files, ["triage", "simpleitk"], args.repeats)
            print(f"{result['mr_series']}: {timings[key]}", flush=True)
        result["timings"] = timings
    plain_times = timings["explicit-vr-little-endian"]
    print(json.dumps(plain_times, indent=2))
    ratios: dict[str, dict[str, float]] = {}
    for syntax, per_reader in timings.items():
        ours = per_reader["triage"].get("median_ms")
        ratios[syntax] = {
            f"{name}_over_triage": round(float(t["median_ms"]) / float(ours), 2)
            for name, t in per_reader.items()
            if name != "triage" and "median_ms" in t and ours
        }
    result["ratios"] = ratios
    result["goals"] = {}
    for syntax, per_reader in ratios.items():
        goal = GOALS.get(syntax, COMPRESSED_GOAL)
        ratio = per_reader.get("simpleitk_over_triage")
        met = ratio is not None and ratio >= goal
        result["goals"][syntax] = {"simpleitk_over_triage": ratio, "goal": goal, "met": met}
        verdict = "met" if met else "NOT met"
        print(f"{syntax:34s} SimpleITK / triage {ratio}  goal >= {goal}: {verdict}")
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    if TILTED.is_dir():
        tilted = sorted(str(p) for p in TILTED.iterdir())
        result["tilted_uneven_geometry"] = {name: geometry_error(tilted, name) for name in readers}
    print(
        json.dumps(
            {"ratios": ratios, **{k: result.get(k) for k in ("tilted_uneven_geometry",)}}, indent=2
        )
    )
    out = (
        args.out
        or ROOT / "benchmarks" / "results" / f"volume-loading-{args.slices}x{args.size}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
