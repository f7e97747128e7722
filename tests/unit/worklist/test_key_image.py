"""The key image of a study: the slice through the finding, its lesion outlined where the lesion
is, the key point marked, the patient's right on the image's left whatever the orientation of
the series; nothing for a study without results, and a shadow result only for engineers."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from support.factories import lesion_ct_series

from triage.analysis.evidence import keep_lesion
from triage.catalogue import Catalogue
from triage.imaging.volume import plan_series
from triage.receive.receiver import describe_instance
from triage.results import SHADOW, ModelResult, Priority
from triage.store import ObjectStore, open_store
from triage.worklist.key_image import key_finding, key_image
from triage.worklist.view import finding_json

YELLOW = (255, 255, 0)
CYAN = (0, 255, 255)
SHAPE, SPACING = (64, 64, 10), (3.0, 3.0, 5.0)
IDENTITY, FLIPPED = (1, 0, 0, 0, 1, 0), (-1, 0, 0, 0, -1, 0)
TRANSPOSED, TRANSPOSED_FLIPPED = (0, 1, 0, 1, 0, 0), (0, -1, 0, -1, 0, 0)
SAGITTAL = (0, 1, 0, 0, 0, -1)  # rows run posterior, columns inferior; slices to the right


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return open_store(str(tmp_path / "store"))


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalogue]:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    yield catalogue
    catalogue.close()


def received(store: ObjectStore, cat: Catalogue, datasets: Sequence[Dataset]) -> str:
    """Store and catalogue a series as the receiver does; its study UID."""
    for ds in datasets:
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        data = buffer.getvalue()
        record = describe_instance(ds, str(ds.file_meta.TransferSyntaxUID), len(data))
        store.put(record.key, data)
        assert cat.record_instance(record)
    return str(datasets[0].StudyInstanceUID)


def triaged(
    cat: Catalogue,
    study: str,
    active: Sequence[ModelResult],
    shadow: Sequence[ModelResult] = (),
) -> None:
    generation = cat.claim_for_triage(study)
    assert generation is not None
    priority = Priority.URGENT if any(r.positive for r in active) else Priority.ROUTINE
    assert cat.finish_triage(study, generation, active, priority, None)
    if shadow:
        assert cat.record_shadow_results(study, generation, shadow)


def result(series: Dataset, probability: float = 0.9, **evidence: object) -> ModelResult:
    return ModelResult(
        "ich_model",
        "1.0.0",
        codes.SCT.IntracranialHemorrhage,
        probability,
        0.5,
        Priority.URGENT if probability >= 0.5 else Priority.ROUTINE,
        str(series.SeriesInstanceUID),
        **evidence,  # type: ignore[arg-type]
    )


def picture(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def coloured(rgb: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(row, column) of every pixel of that colour."""
    return np.argwhere(np.all(rgb == np.asarray(colour, dtype=np.uint8), axis=-1))


def expected_pixel(lps: np.ndarray) -> np.ndarray:
    """Where an LPS point belongs on a centred axial image read the radiologists' way:
    columns from the patient's right (-x) to left, rows from anterior (-y) to posterior."""
    half = (np.asarray(SHAPE[:2]) - 1) / 2 * np.asarray(SPACING[:2])
    column, row = (np.asarray(lps[:2]) + half) / np.asarray(SPACING[:2])
    return np.array([row, column])


@pytest.mark.parametrize("orientation", [IDENTITY, FLIPPED], ids=["identity", "flipped"])
def test_the_lesion_is_outlined_where_it_is_on_the_slice_through_its_centre(
    store: ObjectStore, cat: Catalogue, orientation: tuple[int, ...]
) -> None:
    phantom, datasets = lesion_ct_series(
        f"key-image-{orientation}", 3, SHAPE, SPACING, 12.0, orientation=orientation
    )
    study = received(store, cat, datasets)
    affine = plan_series(datasets)[0].geometry.affine_lps  # the series' own voxel -> LPS
    centre_voxel = np.asarray(phantom.lesion.centre_voxel)
    centre = (affine @ [*centre_voxel, 1.0])[:3]
    # the model's grid: every other voxel in-plane, as a model input is coarser than the source
    coarse = phantom.lesion_mask[::2, ::2, :]
    coarse_affine = affine @ np.diag([2.0, 2.0, 1.0, 1.0])
    mask_key = keep_lesion(store, study, "ich_model", coarse, coarse_affine)
    centre_point = (float(centre[0]), float(centre[1]), float(centre[2]))
    triaged(
        cat,
        study,
        [result(datasets[0], key_point_lps=centre_point, lesion_mask_key=mask_key)],
    )

    image = key_image(store, cat, study)

    assert image is not None
    rgb = picture(image.png)
    assert rgb.shape == (SHAPE[1], SHAPE[0], 3)
    assert image.slice_number == int(np.rint(centre_voxel[2])) + 1 and image.slices == SHAPE[2]
    where = expected_pixel(centre)
    outline = coloured(rgb, YELLOW)
    assert len(outline) > 10
    distances = np.linalg.norm(outline - where, axis=1)
    reach = 12.0 / SPACING[0] + 3  # the lesion's radius in pixels, and the model grid's steps
    assert distances.min() < 4 and distances.max() < reach, (where, outline.mean(axis=0))
    marker = coloured(rgb, CYAN)
    assert len(marker) and np.linalg.norm(marker.mean(axis=0) - where) < 2
    assert (
        "outline of the segmented lesion (yellow) and lesion centre (cyan cross)" in image.caption
    )
    assert f"slice {image.slice_number} of {SHAPE[2]}" in image.caption
    assert "window W80/L40 HU" in image.caption
    assert "ich_model 1.0.0: Intracranial hemorrhage" in image.caption


@pytest.mark.parametrize(
    "orientation",
    [IDENTITY, FLIPPED, TRANSPOSED, TRANSPOSED_FLIPPED],
    ids=["identity", "flipped", "transposed", "transposed-flipped"],
)
def test_a_point_on_the_patients_right_is_on_the_images_left_and_anterior_up(
    store: ObjectStore, cat: Catalogue, orientation: tuple[int, ...]
) -> None:
    _, datasets = lesion_ct_series(
        f"key-side-{orientation}", 4, SHAPE, SPACING, 12.0, orientation=orientation
    )
    study = received(store, cat, datasets)
    right_anterior = (-50.0, -40.0, 0.0)  # LPS: -x is the patient's right, -y anterior
    triaged(cat, study, [result(datasets[0], key_point_lps=right_anterior)])

    image = key_image(store, cat, study)

    assert image is not None
    rgb = picture(image.png)
    marker = coloured(rgb, CYAN)
    assert len(marker)
    rows, columns = rgb.shape[:2]
    assert marker[:, 1].max() < columns / 2, "the patient's right must be on the image's left"
    assert marker[:, 0].max() < rows / 2, "anterior must be up"
    assert np.linalg.norm(marker.mean(axis=0) - expected_pixel(np.asarray(right_anterior))) < 2
    assert not len(coloured(rgb, YELLOW))
    assert "marked: most salient point (cyan cross)" in image.caption


def test_a_study_without_results_has_no_key_image(store: ObjectStore, cat: Catalogue) -> None:
    _, datasets = lesion_ct_series("key-none", 5, SHAPE, SPACING, 12.0)
    study = received(store, cat, datasets)
    assert key_image(store, cat, study) is None  # received, not triaged
    assert key_image(store, cat, "1.2.3.404") is None  # not in the catalogue
    generation = cat.claim_for_triage(study)
    assert generation is not None
    assert cat.finish_triage(study, generation, [], Priority.NOT_ANALYSED, "no series matched")
    assert key_image(store, cat, study) is None


def test_a_shadow_finding_is_shown_only_to_engineers(store: ObjectStore, cat: Catalogue) -> None:
    _, datasets = lesion_ct_series("key-shadow", 6, SHAPE, SPACING, 12.0)
    study = received(store, cat, datasets)
    shadow = dataclasses.replace(
        result(datasets[0], key_point_lps=(0.0, 0.0, 0.0)), model_name="candidate", role=SHADOW
    )
    triaged(cat, study, [], [shadow])

    assert key_image(store, cat, study) is None
    image = key_image(store, cat, study, include_shadow=True)
    assert image is not None and image.finding.model_name == "candidate"
    assert "(shadow mode: not used for the priority)" in image.caption


def test_without_a_key_point_the_middle_slice_is_shown_unmarked(
    store: ObjectStore, cat: Catalogue
) -> None:
    _, datasets = lesion_ct_series("key-negative", 7, SHAPE, SPACING, 12.0)
    study = received(store, cat, datasets)
    triaged(cat, study, [result(datasets[0], probability=0.1)])

    image = key_image(store, cat, study)

    assert image is not None
    assert image.slice_number == SHAPE[2] // 2 + 1 and image.marked == ""
    rgb = picture(image.png)
    assert not len(coloured(rgb, CYAN)) and not len(coloured(rgb, YELLOW))
    assert "not flagged" in image.caption and "no key point recorded" in image.caption


def test_the_catalogue_keeps_the_evidence_and_the_series(
    store: ObjectStore, cat: Catalogue
) -> None:
    _, datasets = lesion_ct_series("key-kept", 8, SHAPE, SPACING, 12.0)
    study = received(store, cat, datasets)
    kept = result(datasets[0], key_point_lps=(1.234, -5.0, 7.5), lesion_mask_key="work/x.npz")
    triaged(cat, study, [kept])

    (row,) = cat.worklist()
    (finding,) = row.findings
    assert finding.key_point_lps == (1.23, -5.0, 7.5)
    assert finding.lesion_mask_key == "work/x.npz"
    assert finding.series_instance_uid == str(datasets[0].SeriesInstanceUID)
    assert finding_json(finding)["key_point_lps"] == [1.23, -5.0, 7.5]


def test_the_shown_finding_is_a_positive_one_with_evidence_before_a_likelier_one(
    store: ObjectStore, cat: Catalogue
) -> None:
    _, datasets = lesion_ct_series("key-rank", 9, SHAPE, SPACING, 12.0)
    study = received(store, cat, datasets)
    without = dataclasses.replace(result(datasets[0], probability=0.99), model_name="a")
    with_point = dataclasses.replace(
        result(datasets[0], probability=0.7, key_point_lps=(0.0, 0.0, 0.0)), model_name="b"
    )
    triaged(cat, study, [without, with_point])
    (row,) = cat.worklist()
    assert key_finding(row.findings).model_name == "b"  # type: ignore[union-attr]
    negative = dataclasses.replace(with_point, probability=0.2)
    cat.reopen(study)
    triaged(cat, study, [without, negative])
    (row,) = cat.worklist()
    assert key_finding(row.findings).model_name == "a"  # type: ignore[union-attr]


def test_a_sagittal_series_is_shown_in_its_axial_plane_unstretched(
    store: ObjectStore, cat: Catalogue
) -> None:
    _, datasets = lesion_ct_series("key-sagittal", 4, (64, 64, 30), SPACING, orientation=SAGITTAL)
    study = received(store, cat, datasets)
    triaged(cat, study, [result(datasets[0], key_point_lps=(-50.0, -40.0, 10.0))])

    image = key_image(store, cat, study)

    assert image is not None and image.slices == 64  # along the series' rows (superior-inferior)
    rgb = picture(image.png)
    # 64 rows of 3 mm (anterior-posterior) by 30 slices of 5 mm shown as 50 columns of 3 mm
    assert rgb.shape == (64, 50, 3)
    marker = coloured(rgb, CYAN)
    assert len(marker)
    assert marker[:, 1].max() < 25 and marker[:, 0].max() < 32  # right on the left, anterior up
