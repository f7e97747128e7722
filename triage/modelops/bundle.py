"""MONAI bundles read and checked with MONAI's own bundle tools, and their versions.

A bundle is a folder (or a zip of one) in the MONAI bundle layout, as the MONAI model zoo ships
it: ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) with a ``network_def``,
and ``models/model.pt`` (a state dict) or ``models/model.ts`` (TorchScript). The triage part -
which series, which finding, threshold, priority - comes from a separate options file
(`triage.modelops.options`), so a bundle registers unchanged. A version is named by the bundle's
own version and a hash of its content and options (``1.0.0+3fa2b1c9``): the same content is
always the same version, and any change makes a new one.

This module reads and checks a bundle and names its version. How its network is built is in
`triage.modelops.network`, its zip in `triage.modelops.archive`; what the pipeline runs is a
`triage.analysis.model.TriageModel` (`Bundle.model`). Versions, roles (active, shadow) and the
audit trail are in `triage.modelops.registry`; the trial run at registration is in
`triage.modelops.validation`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triage.analysis.model import SlidingWindow, TriageModel
from triage.errors import ModelError
from triage.modelops.archive import bundle_zip, unpack_zip
from triage.modelops.network import inference_config, load_network
from triage.modelops.options import (
    OPTIONS_FILES,
    ModelOptions,
    find_options_file,
    read_options_file,
    sliding_window_from,
)
from triage.results import Role

log = logging.getLogger(__name__)

OPTIONS_FILE = "triage.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Bundle:
    """A bundle read and checked from a folder: metadata, options and content hash."""

    path: Path
    metadata: dict[str, Any]
    options: ModelOptions
    files: tuple[str, ...]
    content_hash: str
    name: str

    @property
    def metadata_version(self) -> str:
        return str(self.metadata.get("version", "0")).strip() or "0"

    @property
    def version(self) -> str:
        """The bundle's own version and the first 8 hex digits of its content hash."""
        return f"{self.metadata_version[:50]}+{self.content_hash[:8]}"

    def model(self, role: str = Role.ACTIVE) -> TriageModel:
        """The bundle as the pipeline runs it; its network is loaded on first use."""
        o = self.options
        return TriageModel(
            name=self.name,
            version=self.version,
            path=self.path,
            rule=o.rule,
            input=o.input,
            activation=o.activation,
            output_index=o.output_index,
            finding=o.finding,
            threshold=o.threshold,
            positive_priority=o.positive_priority,
            task=o.task,
            segmentation=o.segmentation,
            sliding_window=sliding_window_of(self.path, o),
            role=role,
            loader=load_network,
        )

    def archive(self) -> bytes:
        """The bundle as a zip (its files and its options as triage.json), byte for byte the
        same for the same content: what the object store keeps."""
        options = self.options.pretty().encode("utf-8")
        return bundle_zip(self.path, self.files, {OPTIONS_FILE: options})


def _read_config(path: Path, what: str) -> dict[str, Any]:
    """A JSON or YAML config read with MONAI's ConfigParser; a clear error when it does not."""
    from monai.bundle import ConfigParser

    if not path.is_file():
        raise ModelError(f"{path} is missing: a MONAI bundle needs {what}")
    try:
        data = ConfigParser.load_config_file(str(path))
    except Exception as exc:  # json, yaml and MONAI raise their own types
        raise ModelError(f"{path} does not parse: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold an object (key: value pairs)")
    return data


def bundle_files(folder: Path) -> list[str]:
    """The bundle's files that make its content: all but hidden files, caches and options."""
    out = []
    for dirpath, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in files:
            rel = Path(dirpath, name).relative_to(folder).as_posix()
            if name.startswith(".") or rel in OPTIONS_FILES:
                continue
            out.append(rel)
    return sorted(out)


def content_hash(folder: Path, files: list[str] | tuple[str, ...], options: ModelOptions) -> str:
    """SHA-256 over every file (path and bytes) and the options: a version's identity."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        file_hash = hashlib.sha256((folder / rel).read_bytes()).hexdigest()
        digest.update(f"{rel}\0{file_hash}\n".encode())
    digest.update(b"options\0" + options.canonical().encode("utf-8"))
    return digest.hexdigest()


def read_bundle(folder: Path, options: Path | None = None, name: str | None = None) -> Bundle:
    """Read and check a bundle folder and its options (``options``, else the triage.json,
    .yaml or .yml beside it). Nothing is loaded onto a device here."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a bundle folder")
    metadata = _read_config(folder / "configs" / "metadata.json", "configs/metadata.json")
    config = inference_config(folder)
    has_ts = (folder / "models" / "model.ts").is_file()
    has_pt = (folder / "models" / "model.pt").is_file()
    if config is None and not has_ts:
        raise ModelError(
            f"{folder / 'configs'} has no inference.json or inference.yaml: a MONAI bundle "
            "needs one with a network_def"
        )
    if config is not None:
        parsed = _read_config(config, "an inference config")
        if (has_pt or not has_ts) and "network_def" not in parsed:
            raise ModelError(f"{config} has no network_def: MONAI cannot build its network")
    if not has_pt and not has_ts:
        raise ModelError(
            f"{folder / 'models' / 'model.pt'} is missing: the bundle has no weights "
            "(models/model.pt or models/model.ts)"
        )
    options_path = options if options is not None else find_options_file(folder)
    if options_path is None:
        raise ModelError(
            f"no triage options for {folder}: pass --options FILE (or keep a triage.json "
            "beside the bundle); see README, Models"
        )
    opts = read_options_file(options_path)
    if opts.task == "classification" and isinstance(opts.sliding_window, SlidingWindow):
        raise ModelError(
            f"{options_path}: sliding_window is for segmentation models; a classifier sees the "
            "whole input"
        )
    model_name = opts.name or name or folder.name
    if not _NAME_RE.match(model_name):
        raise ModelError(
            f"model name {model_name!r} cannot be used: use 1-64 letters, digits, '.', '_' or "
            "'-' (set \"name\" in the options)"
        )
    files = bundle_files(folder)
    return Bundle(
        path=folder,
        metadata=metadata,
        options=opts,
        files=tuple(files),
        content_hash=content_hash(folder, files, opts),
        name=model_name,
    )


@contextmanager
def open_bundle(source: Path, options: Path | None = None) -> Iterator[Bundle]:
    """A bundle from a folder or a zip (unpacked into a temporary folder while in use)."""
    source = Path(source)
    if source.is_dir():
        yield read_bundle(source, options)
        return
    if not source.exists():
        raise ModelError(f"{source} does not exist: give a bundle folder or a .zip of one")
    if not zipfile.is_zipfile(source):
        raise ModelError(f"{source} is neither a bundle folder nor a zip file")
    with tempfile.TemporaryDirectory(prefix="triage-bundle-") as tmp:
        root = unpack_zip(source.read_bytes(), Path(tmp), str(source))
        name = root.name if root != Path(tmp) else source.stem
        yield read_bundle(root, options, name=name)


def sliding_window_of(folder: Path, options: ModelOptions) -> SlidingWindow | None:
    """The options' sliding window, else the bundle's own SlidingWindowInferer, else none."""
    if options.sliding_window is False:
        return None
    if isinstance(options.sliding_window, SlidingWindow):
        return options.sliding_window
    if options.task != "segmentation":
        return None
    config = inference_config(folder)
    if config is None:
        return None
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    try:
        parser.read_config(str(config))
        raw = parser.get("inferer")
    except Exception as exc:
        raise ModelError(f"{config} does not parse: {exc}") from None
    if not isinstance(raw, Mapping) or "SlidingWindowInferer" not in str(raw.get("_target_")):
        return None
    try:
        inferer = parser.get_parsed_content("inferer", instantiate=True)
    except Exception as exc:
        raise ModelError(f"{config}: the inferer cannot be built: {exc}") from None
    mode = getattr(inferer, "mode", "gaussian")
    settings = {
        "roi_size": [int(v) for v in inferer.roi_size],
        "overlap": float(inferer.overlap),
        "sw_batch_size": int(inferer.sw_batch_size),
        "mode": str(getattr(mode, "value", mode)),
    }
    return sliding_window_from(settings, f"{config}: inferer")


def load_bundle(bundle: Path) -> TriageModel:
    """Read a bundle folder with its options beside it (weights are loaded on first use)."""
    return read_bundle(Path(bundle)).model()


def discover_models(models_dir: Path, role: str | None = Role.ACTIVE) -> list[TriageModel]:
    """The bundles under models_dir that carry an options file, sorted by name: those the node
    makes ``role`` at first start ("first_start" in the options; None: all of them)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ModelError(f"TRIAGE_MODELS={str(models_dir)!r} is not a folder")
    bundles = read_bundles(models_dir)
    return [
        b.model(role or b.options.first_start)
        for b in bundles
        if role is None or b.options.first_start == role
    ]


def read_bundles(models_dir: Path) -> list[Bundle]:
    """Every bundle folder under models_dir with an options file beside it, sorted by name."""
    folders = sorted(
        {p.parent for name in OPTIONS_FILES for p in Path(models_dir).glob(f"*/{name}")}
    )
    found = [read_bundle(folder) for folder in folders]
    names = [b.name for b in found]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ModelError(f"two bundles in {models_dir} share the name(s) {', '.join(dupes)}")
    return found
