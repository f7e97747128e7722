"""The triage options of a model: the part of a model that is not in its MONAI bundle.

An ML engineer writes them in a small JSON or YAML file beside the bundle (``triage.json``) or
passes it to ``triage models register BUNDLE --options FILE``: which series the model runs on,
its input, how its output becomes the probability of its finding, the operating threshold and
the priority of a positive result. The format is documented in the README ("Models").
The values a running model carries (`SegmentationScore`, `SlidingWindow`) are defined with it
in `triage.analysis.model`; this module reads and checks them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.sr.coding import Code

from triage.analysis.model import SegmentationScore, SlidingWindow
from triage.analysis.preprocess import InputSpec
from triage.analysis.selection import SeriesRule
from triage.errors import ModelError
from triage.results import ModelState, Priority

OPTIONS_FILES = ("triage.json", "triage.yaml", "triage.yml")
TASKS = ("classification", "segmentation")
ACTIVATIONS = ("sigmoid", "softmax", "none")
SEGMENTATION_SCORES = ("max_probability", "lesion_volume")
#: What the node makes of a bundle in TRIAGE_MODELS when it registers them at first start
FIRST_START = (ModelState.ACTIVE, ModelState.SHADOW, ModelState.REGISTERED)
KNOWN_KEYS = (
    "name",
    "description",
    "task",
    "series",
    "input",
    "output",
    "segmentation",
    "sliding_window",
    "finding",
    "threshold",
    "positive_priority",
    "first_start",
)


@dataclass(frozen=True)
class ModelOptions:
    """A model's triage options, checked. ``data`` is the file's content as read."""

    data: dict[str, Any]
    task: str
    rule: SeriesRule
    input: InputSpec
    activation: str
    output_index: int
    finding: Code
    threshold: float
    positive_priority: Priority
    segmentation: SegmentationScore | None
    #: None: as the bundle's own "inferer" says; False: never; a SlidingWindow: these settings
    sliding_window: SlidingWindow | bool | None
    first_start: str
    name: str | None = None

    def canonical(self) -> str:
        """The options as sorted, compact JSON: what the content hash and the store keep."""
        return json.dumps(self.data, sort_keys=True, separators=(",", ":"))

    def pretty(self) -> str:
        """The options as an indented JSON file (the triage.json kept with a stored version)."""
        return json.dumps(self.data, indent=2, sort_keys=True) + "\n"


def read_options_file(path: Path) -> ModelOptions:
    """Read and check an options file (.json, .yaml or .yml)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"options file {path} is missing") from None
    except IsADirectoryError:
        raise ModelError(f"options file {path} is a folder: give the file itself") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"options file {path} cannot be read: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ModelError(f"options file {path} is not valid YAML: {exc}") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelError(f"options file {path} is not valid JSON: {exc}") from None
    return parse_options(data, str(path))


def find_options_file(folder: Path) -> Path | None:
    """The options file kept beside a bundle (triage.json, .yaml or .yml), if any."""
    found = [folder / name for name in OPTIONS_FILES if (folder / name).is_file()]
    if len(found) > 1:
        raise ModelError(
            f"{folder} holds {' and '.join(p.name for p in found)}: keep one options file"
        )
    return found[0] if found else None


def parse_options(data: Any, where: str) -> ModelOptions:
    """Check the options (as read from ``where``); every problem names the key to fix."""
    if not isinstance(data, Mapping):
        raise ModelError(f"{where} must hold an object (key: value pairs)")
    unknown = sorted(set(data) - set(KNOWN_KEYS))
    if unknown:
        raise ModelError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(KNOWN_KEYS)}"
        )
    try:
        task = str(data.get("task", "classification"))
        if task not in TASKS:
            raise ModelError(f'"task" must be one of {", ".join(TASKS)}, got {task!r}')
        finding = data["finding"]
        if not isinstance(finding, Mapping):
            raise ModelError('"finding" must be {"value": ..., "scheme": ..., "meaning": ...}')
        code = Code(str(finding["value"]), str(finding["scheme"]), str(finding["meaning"]))
        threshold = _number(data["threshold"], "threshold")
        if not 0.0 <= threshold <= 1.0:
            raise ModelError(f'"threshold" {threshold} must lie between 0 and 1')
        output = data.get("output", {})
        if not isinstance(output, Mapping):
            raise ModelError('"output" must be {"activation": ..., "index": ...}')
        default_activation = "softmax" if task == "segmentation" else "sigmoid"
        activation = str(output.get("activation", default_activation))
        if activation not in ACTIVATIONS:
            raise ModelError(f'"output.activation" must be one of {", ".join(ACTIVATIONS)}')
        index = output.get("index", 1 if task == "segmentation" and activation == "softmax" else 0)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ModelError(f'"output.index" must be a whole number >= 0, got {index!r}')
        positive = Priority(str(data.get("positive_priority", "urgent")))
        if positive is Priority.NOT_ANALYSED:
            raise ModelError('"positive_priority" must be urgent or routine')
        series = data.get("series", {})
        if not isinstance(series, Mapping):
            raise ModelError('"series" must be an object of selection rules')
        rule = SeriesRule.from_dict(series)
        spec = InputSpec.from_dict(data["input"])
        segmentation = _segmentation(data.get("segmentation"), task)
        window = _sliding_window(data.get("sliding_window"))
        first_start = str(data.get("first_start", ModelState.ACTIVE))
        if first_start not in FIRST_START:
            raise ModelError(f'"first_start" must be one of {", ".join(FIRST_START)}')
        name = data.get("name")
        if name is not None and not isinstance(name, str):
            raise ModelError('"name" must be text')
    except KeyError as exc:
        raise ModelError(f"{where}: required key {exc} is missing") from None
    except ModelError as exc:
        raise ModelError(f"{where}: {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{where}: {exc}") from None
    return ModelOptions(
        data=json.loads(json.dumps(dict(data))),
        task=task,
        rule=rule,
        input=spec,
        activation=activation,
        output_index=index,
        finding=code,
        threshold=threshold,
        positive_priority=positive,
        segmentation=segmentation,
        sliding_window=window,
        first_start=first_start,
        name=name,
    )


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelError(f'"{key}" must be a number, got {value!r}')
    return float(value)


def _segmentation(value: Any, task: str) -> SegmentationScore | None:
    if task != "segmentation":
        if value is not None:
            raise ModelError('"segmentation" is only for "task": "segmentation"')
        return None
    value = {} if value is None else value
    if not isinstance(value, Mapping):
        raise ModelError('"segmentation" must be {"score": ..., "voxel_threshold": ...}')
    unknown = sorted(set(value) - {"score", "voxel_threshold", "half_volume_ml"})
    if unknown:
        raise ModelError(f'"segmentation" has unknown key(s) {", ".join(unknown)}')
    score = str(value.get("score", "max_probability"))
    if score not in SEGMENTATION_SCORES:
        raise ModelError(f'"segmentation.score" must be one of {", ".join(SEGMENTATION_SCORES)}')
    voxel_threshold = _number(value.get("voxel_threshold", 0.5), "segmentation.voxel_threshold")
    if not 0.0 < voxel_threshold <= 1.0:
        raise ModelError('"segmentation.voxel_threshold" must lie in (0, 1]')
    half = _number(value.get("half_volume_ml", 0.5), "segmentation.half_volume_ml")
    if half <= 0:
        raise ModelError('"segmentation.half_volume_ml" must be a positive volume in mL')
    return SegmentationScore(score, voxel_threshold, half)


def _sliding_window(value: Any) -> SlidingWindow | bool | None:
    if value is None or value is True:
        return None
    if value is False:
        return False
    if not isinstance(value, Mapping):
        raise ModelError('"sliding_window" must be true, false or {"roi_size": [x, y, z], ...}')
    unknown = sorted(set(value) - {"roi_size", "overlap", "sw_batch_size", "mode"})
    if unknown:
        raise ModelError(f'"sliding_window" has unknown key(s) {", ".join(unknown)}')
    return sliding_window_from(value, '"sliding_window"')


def sliding_window_from(value: Mapping[str, Any], where: str) -> SlidingWindow:
    """Sliding-window settings from options or from a bundle's SlidingWindowInferer."""
    roi = value.get("roi_size")
    if (
        not isinstance(roi, Sequence)
        or isinstance(roi, str)
        or len(roi) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in roi)
    ):
        raise ModelError(f"{where}: roi_size must be three positive whole numbers, got {roi!r}")
    overlap = _number(value.get("overlap", 0.25), "overlap")
    if not 0.0 <= overlap < 1.0:
        raise ModelError(f"{where}: overlap must lie in [0, 1), got {overlap}")
    batch = value.get("sw_batch_size", 1)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ModelError(f"{where}: sw_batch_size must be a whole number >= 1, got {batch!r}")
    mode = str(value.get("mode", "gaussian"))
    if mode not in ("constant", "gaussian"):
        raise ModelError(f"{where}: mode must be constant or gaussian, got {mode!r}")
    return SlidingWindow((int(roi[0]), int(roi[1]), int(roi[2])), overlap, batch, mode)
