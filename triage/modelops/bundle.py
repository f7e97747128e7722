"""Model registry: MONAI bundles read with MONAI's own bundle tools, and their networks.

A bundle is a folder (or a zip of one) in the MONAI bundle layout, as the MONAI model zoo ships
it: ``configs/metadata.json``, ``configs/inference.json`` (or ``.yaml``) with a ``network_def``,
and ``models/model.pt`` (a state dict) or ``models/model.ts`` (TorchScript). The triage part -
which series, which finding, threshold, priority - comes from a separate options file
(`triage.modelops.options`), so a bundle registers unchanged. A version is named by the bundle's
own version and a hash of its content and options (``1.0.0+3fa2b1c9``): the same content is
always the same version, and any change makes a new one.

Versions, roles (active, shadow) and the audit trail are in `triage.modelops.registry`; the
trial run
at registration is in `triage.modelops.validation`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import os
import re
import tempfile
import threading
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydicom.sr.coding import Code

from triage.analysis.preprocess import InputSpec
from triage.analysis.selection import SeriesRule
from triage.errors import ModelError
from triage.modelops.options import (
    OPTIONS_FILES,
    ModelOptions,
    SegmentationScore,
    SlidingWindow,
    find_options_file,
    read_options_file,
    sliding_window_from,
)
from triage.results import Priority

log = logging.getLogger(__name__)

OPTIONS_FILE = "triage.json"
CONFIG_FILES = ("inference.json", "inference.yaml", "inference.yml")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass
class TriageModel:
    """One model version as the pipeline runs it (the network is loaded on first use)."""

    name: str
    version: str
    path: Path
    rule: SeriesRule
    input: InputSpec
    activation: str
    output_index: int
    finding: Code
    threshold: float
    positive_priority: Priority
    task: str = "classification"
    segmentation: SegmentationScore | None = None
    sliding_window: SlidingWindow | None = None
    #: "active" (changes priorities, reports to the PACS) or "shadow" (recorded only)
    role: str = "active"
    _networks: dict[str, torch.nn.Module] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def network(self, device: torch.device) -> torch.nn.Module:
        """The network with its weights, on device, in eval mode (loaded once per device)."""
        with self._lock:
            if str(device) not in self._networks:
                self._networks[str(device)] = load_network(self.path, device)
            return self._networks[str(device)]

    def with_role(self, role: str) -> TriageModel:
        """The same model (and loaded network) in another role."""
        return dataclasses.replace(self, role=role)


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

    def model(self, role: str = "active") -> TriageModel:
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
        )

    def archive(self) -> bytes:
        """The bundle as a zip (its files and its options as triage.json), byte for byte the
        same for the same content: what the object store keeps."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in self.files:
                _add_to_zip(zf, rel, (self.path / rel).read_bytes())
            _add_to_zip(zf, OPTIONS_FILE, self.options.pretty().encode("utf-8"))
        return buffer.getvalue()


def _add_to_zip(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


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


def inference_config(folder: Path) -> Path | None:
    """configs/inference.json (or .yaml / .yml) of a bundle folder, if it has one."""
    return next(
        (folder / "configs" / n for n in CONFIG_FILES if (folder / "configs" / n).is_file()), None
    )


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


def load_network(bundle: Path, device: torch.device) -> torch.nn.Module:
    """Instantiate ``network_def`` from the bundle config and load its weights."""
    from monai.bundle import ConfigParser

    ts_path = bundle / "models" / "model.ts"
    pt_path = bundle / "models" / "model.pt"
    if ts_path.is_file() and not pt_path.is_file():
        try:
            net: torch.nn.Module = torch.jit.load(str(ts_path), map_location=device)
        except Exception as exc:
            raise ModelError(f"{ts_path} is not a loadable TorchScript model: {exc}") from exc
        return net.eval()
    config = inference_config(bundle)
    if config is None:
        raise ModelError(f"{bundle}/configs has no inference.json or inference.yaml")
    if not pt_path.is_file():
        raise ModelError(f"{pt_path} is missing: the bundle has no weights")
    parser = ConfigParser()
    try:
        parser.read_config(str(config))
        net = parser.get_parsed_content("network_def", instantiate=True)
    except Exception as exc:
        cause = f" ({_first_line(exc.__cause__)})" if exc.__cause__ is not None else ""
        raise ModelError(
            f"{config}: network_def cannot be built: {_first_line(exc)}{cause}"
        ) from exc
    if not isinstance(net, torch.nn.Module):
        raise ModelError(f"{config}: network_def builds a {type(net).__name__}, not a network")
    try:
        state = torch.load(pt_path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{pt_path} cannot be read as PyTorch weights (torch.load: {_first_line(exc)})"
        ) from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise ModelError(f"{pt_path} holds a {type(state).__name__}, not a state_dict of weights")
    mismatch = _mismatch(net, state)
    try:
        net.load_state_dict(state)
    except Exception as exc:
        raise ModelError(
            f"{pt_path} does not fit the network in {config.name} "
            f"({type(net).__name__}): {mismatch or _first_line(exc)}"
        ) from exc
    return net.to(device).eval()


def _mismatch(net: torch.nn.Module, state: Mapping[str, Any]) -> str:
    """How a state_dict differs from the network's, in a line (torch lists every key)."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    reshaped = [
        k
        for k in own
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} weight(s) of the network are not in it (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} weight(s) fit no layer (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} weight(s) have another shape (e.g. {k}: "
            f"{list(state[k].shape)} in the file, {list(own[k].shape)} in the network)"
        )
    if parts:
        parts.append("are these the weights of another network?")
    return "; ".join(parts)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def discover_models(models_dir: Path, role: str | None = "active") -> list[TriageModel]:
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
