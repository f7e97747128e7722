"""What the catalogue keeps for series selection, in a new database and in one made before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, SecondaryCaptureImageStorage

from triage.catalogue import Catalogue, InstanceRecord


def record(sop: str, **extra: object) -> InstanceRecord:
    return InstanceRecord(
        study_instance_uid="1.2.3",
        series_instance_uid=str(extra.pop("series", "1.2.3.1")),
        sop_instance_uid=sop,
        sop_class_uid=str(extra.pop("sop_class_uid", CTImageStorage)),
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        key=f"raw/1.2.3/{sop}.dcm",
        size=10,
        modality="CT",
        **extra,  # type: ignore[arg-type]
    )


def test_series_keeps_kernel_thickness_contrast_sop_classes_and_frames(tmp_path: Path) -> None:
    cat = Catalogue(f"sqlite:///{tmp_path / 'c.db'}")
    kept = {"convolution_kernel": "Hr38\\3", "slice_thickness": 0.75, "contrast_agent": "Iomeron"}
    cat.record_instance(record("1.2.3.1.1", **kept, image_type="ORIGINAL\\PRIMARY\\AXIAL"))
    cat.record_instance(record("1.2.3.1.2", **kept, image_type="ORIGINAL\\PRIMARY\\AXIAL"))
    cat.record_instance(
        record("1.2.3.2.1", series="1.2.3.2", frames=120, sop_class_uid=EnhancedCTImageStorage)
    )
    cat.record_instance(
        record("1.2.3.3.1", series="1.2.3.3", sop_class_uid=SecondaryCaptureImageStorage)
    )
    by_uid = {s.series_instance_uid: s for s in cat.series_of("1.2.3")}
    axial = by_uid["1.2.3.1"]
    assert (axial.convolution_kernel, axial.slice_thickness, axial.contrast_agent) == (
        "Hr38\\3",
        0.75,
        "Iomeron",
    )
    assert (axial.sop_classes, axial.frames, axial.images) == ((CTImageStorage,), 2, 2)
    enhanced = by_uid["1.2.3.2"]
    assert (len(enhanced.keys), enhanced.images) == (1, 120)
    assert (enhanced.convolution_kernel, enhanced.slice_thickness) == ("", None)
    assert by_uid["1.2.3.3"].sop_classes == (SecondaryCaptureImageStorage,)
    cat.close()


def test_a_database_made_before_gets_the_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    cat = Catalogue(f"sqlite:///{path}")
    cat.record_instance(record("1.2.3.1.1"))
    cat.close()
    with sqlite3.connect(path) as db:  # back to the schema of the first release
        db.execute("DROP TABLE alembic_version")  # made before migrations: no level recorded
        for table, column in (
            ("series", "convolution_kernel"),
            ("series", "slice_thickness"),
            ("series", "contrast_agent"),
            ("instances", "frames"),
            ("studies", "worker"),  # and those that came with migrations
            ("studies", "lease_expires"),
            ("outbox", "lease_owner"),
            ("outbox", "lease_expires"),
            ("studies", "announced_instances"),  # came with migration 0004
            ("studies", "announced_counts_wrong"),
            ("series", "announced_instances"),
        ):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        for table in ("access_audit", "web_sessions", "users"):  # came with migration 0003
            db.execute(f"DROP TABLE {table}")
    reopened = Catalogue(f"sqlite:///{path}")
    (old,) = reopened.series_of("1.2.3")
    assert (old.convolution_kernel, old.slice_thickness, old.contrast_agent) == ("", None, "")
    assert (old.frames, old.images, old.sop_classes) == (1, 1, (CTImageStorage,))
    reopened.record_instance(record("1.2.3.9.1", series="1.2.3.9", convolution_kernel="UB"))
    assert {s.convolution_kernel for s in reopened.series_of("1.2.3")} == {"", "UB"}
    reopened.close()
