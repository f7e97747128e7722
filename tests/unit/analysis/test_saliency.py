"""A classifier's key point: on the shipped ich_classifier it lands in the synthetic lesion, and
the key image is a slice through it (all but one of eight); any MONAI classifier bundle has
one."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.uid import generate_uid
from support.bundles import classifier_bundle, options, write_options
from support.paths import PROJECT_ROOT

from triage.analysis.inference import score
from triage.analysis.preprocess import model_input_with_affine
from triage.analysis.saliency import key_point
from triage.analysis.source_slices import key_images
from triage.errors import ModelError
from triage.modelops.bundle import read_bundle
from triage.synthetic.phantom import head_phantom, random_grid
from triage.synthetic.series import ct_series

CPU = torch.device("cpu")
#: fresh phantoms, not the ones the smoothing was chosen on (those gave 25 of 25 in the radius;
#: on 38 positives of this seed 34 were, median error 5.1 mm: the test takes the first eight)
SEED = 97531


@pytest.fixture(scope="module")
def ich_classifier():
    return read_bundle(PROJECT_ROOT / "models" / "ich_classifier").model()


def test_the_key_point_is_in_the_lesion_and_the_key_image_through_it(ich_classifier) -> None:
    errors, inside, crossing, seconds = [], [], [], []
    for index in range(8):
        rng = np.random.default_rng([SEED, index])
        shape, spacing = random_grid(rng)
        phantom = head_phantom(rng, shape, spacing, True)
        assert phantom.lesion is not None
        x, affine = model_input_with_affine(
            phantom.hu, phantom.affine_lps, ich_classifier.input, CPU
        )
        if score(ich_classifier, x, affine, CPU).probability < ich_classifier.threshold:
            continue  # a missed lesion has no key point to check
        start = time.perf_counter()
        found = key_point(ich_classifier, x, affine, CPU)
        seconds.append(time.perf_counter() - start)
        truth_ijk = np.argwhere(phantom.lesion_mask).mean(axis=0)
        truth = (phantom.affine_lps @ np.array([*truth_ijk, 1.0]))[:3]
        error = float(np.linalg.norm(np.asarray(found.point_lps) - truth))
        errors.append(error)
        inside.append(error <= phantom.lesion.radius_mm)
        # the key image: the source slice nearest the key point, does it cross the lesion?
        headers = ct_series(
            phantom.hu,
            phantom.spacing,
            study_instance_uid=generate_uid(entropy_srcs=["saliency", str(index)]),
            series_instance_uid=generate_uid(entropy_srcs=["saliency", str(index), "series"]),
            patient_id="PID",
            patient_name="Phantom^Head",
            accession_number="",
            study_description="CT head",
            series_description="Head",
            series_number=2,
            study_date="20240517",
            study_time="120000",
        )
        (key,) = key_images(headers, found.point_lps)
        crossing.append(bool(phantom.lesion_mask[:, :, int(key.InstanceNumber) - 1].any()))
    report = f"errors (mm) {np.round(errors, 1)}, seconds {np.round(seconds, 2)}"
    assert len(errors) >= 6, report
    assert np.median(errors) <= 8.0, report
    assert sum(inside) >= len(errors) - 1, report  # a pointer, not a segmentation
    assert sum(crossing) >= len(errors) - 1, report
    # one forward and one backward pass: bounded, whatever the lesion (CPU, shared machine)
    assert max(seconds) < 30.0, report
    print(report)


def test_any_monai_classifier_bundle_has_a_key_point(tmp_path: Path) -> None:
    folder = classifier_bundle(tmp_path)
    opts = write_options(tmp_path / "opts.json", options(spatial_size=[64, 64, 32]))
    model = read_bundle(folder, opts).model()
    x = torch.rand((1, 1, 64, 64, 32), generator=torch.Generator().manual_seed(0))
    affine = np.diag([4.0, 4.0, 5.0, 1.0])
    affine[:3, 3] = (-120.0, -120.0, -80.0)
    found = key_point(model, x, affine, CPU)
    assert all(0 <= v < n for v, n in zip(found.voxel, (64, 64, 32), strict=True))
    expected = affine @ np.array([*found.voxel, 1.0])
    np.testing.assert_allclose(found.point_lps, expected[:3])


def test_what_has_no_key_point_says_so(ich_classifier, tmp_path: Path) -> None:
    x = torch.zeros((1, 1, 96, 96, 32))
    with pytest.raises(ModelError, match="no part of this input"):
        key_point(ich_classifier, x, np.eye(4), CPU)
    segmenter = read_bundle(PROJECT_ROOT / "models" / "lesion_segmenter").model()
    with pytest.raises(ModelError, match="lesion centre is its key point"):
        key_point(segmenter, x, np.eye(4), CPU)
    with pytest.raises(ModelError, match="affine_lps"):
        key_point(ich_classifier, x, np.eye(3), CPU)
    with pytest.raises(ModelError, match=r"\(1, 1, X, Y, Z\)"):
        key_point(ich_classifier, x[0], np.eye(4), CPU)
