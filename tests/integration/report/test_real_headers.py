"""Every real header makes an SR: each CT/MR series of the shared real data, and an anonymised
copy of it (no birth date, sex, referring physician, accession number), goes through the whole
loop - storescu -> the node -> Orthanc in its default configuration - and the study ends with an
SR in the PACS (a result, or one that says why it was not analysed) that dciodvfy passes."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from support.dicom_checks import assert_dciodvfy_clean
from support.modality import storescu
from support.nodes import node_env, running_node
from support.orthanc import ORTHANC, Orthanc, srs_in_orthanc
from support.waiting import run_finished, wait_until

from triage.app.node import TriageNode
from triage.config import DicomNode
from triage.dimse import is_success, store_datasets
from triage.report.sr_read import read_document
from triage.results import Priority

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# every CT and MR series folder of ../shared/data/dicom (README there)
SERIES = (
    "ct_head_ge_tilt_uneven",
    "ct_head_phantom_philips_5mm",
    "mr_ge_fmri_4d",
    "enhanced_mr_siemens_xa10",
    "transfer_syntaxes_siemens",
)
#: what anonymisation removes (type 2 attributes the SR must still be able to write empty)
REMOVED = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    if ORTHANC is None:
        pytest.skip("Orthanc is not installed (Debian package orthanc)")
    orthanc = Orthanc(tmp_path_factory.mktemp("real-pacs"))
    orthanc.start(defaults=True)
    yield orthanc
    orthanc.stop()


@pytest.fixture(scope="module")
def node(
    pacs: Orthanc, tmp_path_factory: pytest.TempPathFactory, prefect_harness: None
) -> Iterator[TriageNode]:
    env = node_env(tmp_path_factory.mktemp("real-node"), pacs.node, QUIET_SECONDS="1.5")
    with running_node(env) as started:
        yield started


def dicom_files(folder: Path) -> list[Path]:
    out = []
    for path in sorted(folder.iterdir()):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue
        if "SOPInstanceUID" in ds and "StudyInstanceUID" in ds:  # not the Philips index file
            out.append(path)
    return out


def anonymised_copy(files: list[Path], target: Path, tag: str) -> list[Path]:
    """New UIDs (a study of its own) and no patient attributes beyond an empty name and ID."""
    target.mkdir(parents=True)
    uids: dict[str, str] = {}

    def new(uid: str) -> str:
        return uids.setdefault(uid, str(generate_uid(entropy_srcs=[tag, uid])))

    out = []
    for i, path in enumerate(files):
        ds = pydicom.dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            setattr(ds, keyword, new(str(getattr(ds, keyword))))
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        for keyword in REMOVED:
            if keyword in ds:
                del ds[keyword]
        ds.PatientName = ""
        ds.PatientID = ""
        ds.PatientIdentityRemoved = "YES"
        out.append(target / f"{i:04d}.dcm")
        ds.save_as(out[-1], enforce_file_format=True)
    return out


def study_of(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


@pytest.mark.parametrize("anonymised", [False, True], ids=["as-is", "anonymised"])
@pytest.mark.parametrize("name", SERIES)
def test_the_study_gets_a_valid_sr_in_the_pacs(
    name: str,
    anonymised: bool,
    shared_data: Path,
    node: TriageNode,
    pacs: Orthanc,
    tmp_path: Path,
) -> None:
    files = dicom_files(shared_data / name)
    if anonymised:
        files = anonymised_copy(files, tmp_path / "anonymised", name)
    else:  # only the DICOM files (the Philips folder also holds its scanner's index file)
        (tmp_path / "as-is").mkdir()
        for path in files:
            shutil.copy(path, tmp_path / "as-is" / path.name)
        files = sorted((tmp_path / "as-is").iterdir())
    if name == "transfer_syntaxes_siemens":
        # nine transfer syntaxes: storescu converts compressed files to the uncompressed
        # syntax it negotiates (and fails on those it cannot decode); our C-STORE SCU proposes
        # each file's own syntax, as a PACS forwarding them unchanged does
        node_ae = DicomNode("TRIAGE", "127.0.0.1", node.port)
        datasets = [pydicom.dcmread(path) for path in files]
        assert all(is_success(s) for s in store_datasets(node_ae, datasets, "MODALITY"))
    else:
        sent = storescu(files[0].parent, node.port)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    study = study_of(files)

    def reported() -> bool:
        state = node.svc.catalogue.study_state(study)
        return state is not None and state[0] != "receiving" and bool(srs_in_orthanc(pacs, study))

    wait_until(reported, 180, f"an SR for {name} in the PACS")
    wait_until(
        lambda: node.svc.catalogue.study_state(study)[0] in ("triaged", "not analysed"),  # type: ignore[index]
        60,
        "the study to settle",
    )
    wait_until(run_finished(node.svc.catalogue, study), 120, "the shadow models' results")
    (instance,) = srs_in_orthanc(pacs, study)
    data = pacs.instance_file(instance["ID"])
    (tmp_path / "sr.dcm").write_bytes(data)
    assert_dciodvfy_clean(tmp_path / "sr.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    document = read_document(ds)
    assert ds.StudyInstanceUID == study
    (row,) = [r for r in node.svc.catalogue.worklist() if r.study_instance_uid == study]
    said = {f.priority for f in document.findings}
    if row.state == "not analysed":
        assert said == {Priority.NOT_ANALYSED}
        assert all(f.reason for f in document.findings)
    else:
        assert row.priority is not None and said == {Priority(row.priority)}
    if anonymised:
        for keyword in REMOVED:
            assert keyword in ds and not ds[keyword].value, keyword  # present and empty
    if name.startswith("ct_head"):
        # real normal head CTs (issue 15): the demonstration models were trained on phantoms,
        # these are unlike them: shown as uncertain, never urgent, by either model
        assert row.priority != Priority.URGENT
        for finding in (*row.findings, *row.shadow_findings):
            assert finding.priority != Priority.URGENT, finding
            assert finding.uncertain, finding
        for said_finding in document.findings:
            assert said_finding.input_check == "uncertain"
            assert said_finding.ood_score is not None and said_finding.ood_threshold is not None
            assert said_finding.ood_score > said_finding.ood_threshold
