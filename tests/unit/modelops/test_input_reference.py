"""The registry records each version's input reference (issue 15): the shipped bundles' own,
one made from studies the engineer gives (`--reference DIR`), or none, said so; the model the
pipeline runs carries what was recorded."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.bundles import classifier_bundle, options, write_options
from support.factories import lesion_ct_series, phantom_ct_series
from support.paths import PROJECT_ROOT

from triage.catalogue import Catalogue
from triage.errors import ModelError
from triage.modelops.registry import ModelLifecycle
from triage.store import LocalStore
from triage.synthetic.series import write_series

CLS_OPTIONS = {"spatial_size": [64, 64, 32]}


@pytest.fixture
def registry(tmp_path: Path) -> ModelLifecycle:
    catalogue = Catalogue(f"sqlite:///{tmp_path / 'catalogue.db'}")
    return ModelLifecycle(catalogue, LocalStore(tmp_path / "store"), tmp_path / "cache")


def test_the_shipped_bundles_are_registered_with_their_reference(
    registry: ModelLifecycle,
) -> None:
    for info in registry.ensure_registered(PROJECT_ROOT / "models"):
        assert info.reference is not None, info.name
        assert info.reference["studies"] == 60
        assert "synthetic head phantoms" in info.reference["source"]
        model = registry.model(info)
        assert model.reference is not None
        assert model.reference.threshold == pytest.approx(info.reference["threshold"])


def test_a_zoo_bundle_without_a_reference_runs_unchecked_and_says_so(
    registry: ModelLifecycle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bundle = classifier_bundle(tmp_path / "zoo")
    opts = write_options(tmp_path / "mine.json", options(**CLS_OPTIONS))
    with caplog.at_level(logging.WARNING, logger="triage.modelops.reference"):
        info, _ = registry.register(bundle, opts, by="ml-engineer")
    assert info.reference is None
    assert registry.model(info).reference is None
    assert "runs without the out-of-distribution check" in caplog.text


def test_a_reference_from_the_engineers_studies_is_recorded(
    registry: ModelLifecycle, tmp_path: Path
) -> None:
    studies = tmp_path / "reference"
    for seed in range(10):
        make = lesion_ct_series if seed % 2 else phantom_ct_series
        made = make(f"ref{seed}", seed=seed, shape=(48, 48, 12), spacing=(4.0, 4.0, 5.0))
        datasets = made[1] if isinstance(made, tuple) else made
        write_series(datasets, studies / f"study{seed}")
    (studies / "notes").mkdir()  # a folder without a study: left out, not an error
    (studies / "notes" / "README.txt").write_text("not DICOM")
    bundle = classifier_bundle(tmp_path / "zoo")
    opts = write_options(tmp_path / "mine.json", options(**CLS_OPTIONS))
    info, _ = registry.register(bundle, opts, by="ml-engineer", reference=studies)
    assert info.reference is not None
    assert info.reference["studies"] == 10
    assert str(studies) in info.reference["source"]
    assert registry.model(info).reference is not None


def test_a_reference_folder_without_usable_studies_is_refused_and_nothing_registered(
    registry: ModelLifecycle, tmp_path: Path
) -> None:
    (tmp_path / "empty" / "a").mkdir(parents=True)
    bundle = classifier_bundle(tmp_path / "zoo")
    opts = write_options(tmp_path / "mine.json", options(**CLS_OPTIONS))
    with pytest.raises(ModelError, match="none of its 1 studies"):
        registry.register(bundle, opts, by="ml-engineer", reference=tmp_path / "empty")
    assert registry.versions() == []
