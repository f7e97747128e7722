"""Settings: defaults, every TRIAGE_* variable, bad values named in the error, the TOML file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from triage.config import PROJECT_ROOT, AllowedAE, DicomNode, Settings, load_settings
from triage.errors import ConfigError


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    return {"TRIAGE_HOME": str(tmp_path), **values}


def test_defaults_with_an_empty_environment_run_embedded(tmp_path: Path) -> None:
    s = load_settings(environ=env(tmp_path))
    assert isinstance(s, Settings)
    assert s.home == tmp_path.resolve()
    assert s.ae_title == "TRIAGE"
    assert s.host == "127.0.0.1"
    assert s.port == 11112
    assert s.pacs is None
    assert s.quiet_seconds == 5.0
    assert s.database_url == f"sqlite:///{tmp_path.resolve() / 'catalogue.db'}"
    assert s.store == str(tmp_path.resolve() / "store")
    assert s.store_path == tmp_path.resolve() / "store"
    assert s.models == PROJECT_ROOT / "models"
    assert s.device == "auto"
    assert s.delivery_max_tries == 8
    assert s.delivery_backoff_seconds == 2.0
    assert s.log_level == "INFO"


def test_load_settings_does_not_touch_the_home_folder(tmp_path: Path) -> None:
    home = tmp_path / "not-yet"
    s = load_settings(environ={"TRIAGE_HOME": str(home)})
    assert s.home == home.resolve()
    assert not home.exists()


def test_as_dict_gives_every_setting_as_text(tmp_path: Path) -> None:
    d = load_settings(environ=env(tmp_path)).as_dict()
    assert set(d) == {
        "home",
        "ae_title",
        "host",
        "port",
        "pacs",
        "quiet_seconds",
        "database_url",
        "store",
        "models",
        "device",
        "delivery_max_tries",
        "delivery_backoff_seconds",
        "log_level",
        "uneven_spacing",
        "amp",
        "allowed_aes",
        "tls_cert",
        "tls_key",
        "tls_ca",
        "pacs_tls",
        "pacs_protocol",
        "pull_interval",
        "pull_retrieve",
        "pull_modalities",
        "pull_overlap_minutes",
        "pull_look_back_hours",
        "dicomweb_url",
        "dicomweb_user",
        "dicomweb_password",
        "dicomweb_password_file",
        "dicomweb_token",
        "dicomweb_token_file",
        "hl7_endpoint",
        "hold_downgrades",
        "accept_sop_classes",
        "s3_endpoint",
        "s3_access_key",
        "s3_access_key_file",
        "s3_secret_key",
        "s3_secret_key_file",
        "s3_region",
        "s3_ca_bundle",
        "worker_name",
        "lease_seconds",
        "complete_on_announced_count",
        "web_port",
        "web_url",
        "web_session_hours",
        "viewer_url",
        "notify_webhook",
        "notify_webhook_secret",
        "notify_webhook_secret_file",
        "notify_smtp",
        "notify_smtp_starttls",
        "notify_smtp_user",
        "notify_smtp_password",
        "notify_smtp_password_file",
        "notify_from",
        "notify_to",
        "notify_patient_name",
    }
    assert all(isinstance(v, str) for v in d.values())
    assert (d["web_port"], d["viewer_url"], d["notify_to"]) == ("8080", "", "")
    assert d["pacs"] == ""
    assert d["port"] == "11112"
    assert (d["worker_name"], d["lease_seconds"]) == ("", "60.0")
    assert d["complete_on_announced_count"] == "true"


def test_a_worker_is_named_by_its_setting_or_by_host_and_process(tmp_path: Path) -> None:
    import socket

    assert load_settings(environ=env(tmp_path)).worker == f"{socket.gethostname()}:{os.getpid()}"
    named = load_settings(environ={**env(tmp_path), "TRIAGE_WORKER_NAME": " gpu-1 "})
    assert named.worker == "gpu-1"
    with pytest.raises(ConfigError, match="TRIAGE_LEASE_SECONDS"):
        load_settings(environ={**env(tmp_path), "TRIAGE_LEASE_SECONDS": "0"})


def test_completion_on_announced_counts_is_on_unless_turned_off(tmp_path: Path) -> None:
    assert load_settings(environ=env(tmp_path)).complete_on_announced_count is True
    off = {**env(tmp_path), "TRIAGE_COMPLETE_ON_ANNOUNCED_COUNT": "no"}
    assert load_settings(environ=off).complete_on_announced_count is False
    with pytest.raises(ConfigError, match="TRIAGE_COMPLETE_ON_ANNOUNCED_COUNT"):
        load_settings(environ={**env(tmp_path), "TRIAGE_COMPLETE_ON_ANNOUNCED_COUNT": "maybe"})


def test_uneven_spacing_is_resample_or_refuse(tmp_path: Path) -> None:
    assert load_settings(environ=env(tmp_path)).uneven_spacing == "resample"
    refuse = load_settings(environ={**env(tmp_path), "TRIAGE_UNEVEN_SPACING": "Refuse"})
    assert refuse.uneven_spacing == "refuse"
    with pytest.raises(ConfigError, match="TRIAGE_UNEVEN_SPACING='squash': use resample"):
        load_settings(environ={**env(tmp_path), "TRIAGE_UNEVEN_SPACING": "squash"})


def test_every_variable_is_parsed(tmp_path: Path) -> None:
    s = load_settings(
        environ=env(
            tmp_path,
            TRIAGE_AE_TITLE="  NODE_1 ",
            TRIAGE_HOST="0.0.0.0",
            TRIAGE_PORT="4242",
            TRIAGE_PACS="ORTHANC@pacs.example:104",
            TRIAGE_QUIET_SECONDS="2.5",
            TRIAGE_DATABASE_URL="postgresql://u@db/triage",
            TRIAGE_STORE=str(tmp_path / "objects"),
            TRIAGE_MODELS=str(tmp_path / "bundles"),
            TRIAGE_DEVICE="cuda:1",
            TRIAGE_DELIVERY_MAX_TRIES="3",
            TRIAGE_DELIVERY_BACKOFF_SECONDS="0.5",
            TRIAGE_LOG_LEVEL="debug",
        )
    )
    assert s.ae_title == "NODE_1"
    assert s.host == "0.0.0.0"
    assert s.port == 4242
    assert s.pacs == DicomNode("ORTHANC", "pacs.example", 104)
    assert str(s.pacs) == "ORTHANC@pacs.example:104"
    assert s.quiet_seconds == 2.5
    assert s.database_url == "postgresql://u@db/triage"
    assert s.store == str(tmp_path / "objects")
    assert s.models == tmp_path / "bundles"
    assert s.device == "cuda:1"
    assert s.delivery_max_tries == 3
    assert s.delivery_backoff_seconds == 0.5
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_devices_accepted(tmp_path: Path, device: str) -> None:
    assert load_settings(environ=env(tmp_path, TRIAGE_DEVICE=device)).device == device


@pytest.mark.parametrize("title", ["A", "SIXTEEN_CHARS_AE", "with space", "x-y.z"])
def test_ae_titles_accepted(tmp_path: Path, title: str) -> None:
    assert load_settings(environ=env(tmp_path, TRIAGE_AE_TITLE=title)).ae_title == title


def test_blank_host_falls_back_to_loopback(tmp_path: Path) -> None:
    assert load_settings(environ=env(tmp_path, TRIAGE_HOST="  ")).host == "127.0.0.1"


def test_blank_pacs_means_none(tmp_path: Path) -> None:
    assert load_settings(environ=env(tmp_path, TRIAGE_PACS="  ")).pacs is None


def test_port_bounds_are_inclusive(tmp_path: Path) -> None:
    assert load_settings(environ=env(tmp_path, TRIAGE_PORT="1")).port == 1
    assert load_settings(environ=env(tmp_path, TRIAGE_PORT="65535")).port == 65535


def test_models_path_expands_the_user_folder(tmp_path: Path) -> None:
    s = load_settings(environ=env(tmp_path, TRIAGE_MODELS="~/bundles"))
    assert s.models == Path("~/bundles").expanduser()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TRIAGE_PORT", "0"),
        ("TRIAGE_PORT", "70000"),
        ("TRIAGE_PORT", "abc"),
        ("TRIAGE_PORT", "-5"),
        ("TRIAGE_PORT", ""),
        ("TRIAGE_AE_TITLE", "SEVENTEEN_CHARS_X"),
        ("TRIAGE_AE_TITLE", "BAD\\AE"),
        ("TRIAGE_AE_TITLE", ""),
        ("TRIAGE_AE_TITLE", "   "),
        ("TRIAGE_AE_TITLE", "caf\u00e9"),
        ("TRIAGE_PACS", "ORTHANC"),
        ("TRIAGE_PACS", "127.0.0.1:4242"),
        ("TRIAGE_PACS", "ORTHANC@127.0.0.1"),
        ("TRIAGE_PACS", "ORTHANC@127.0.0.1:port"),
        ("TRIAGE_PACS", "ORTHANC@127.0.0.1:0"),
        ("TRIAGE_PACS", "ORTHANC@127.0.0.1:70000"),
        ("TRIAGE_PACS", "WAY_TOO_LONG_AE_TITLE@127.0.0.1:104"),
        ("TRIAGE_QUIET_SECONDS", "0"),
        ("TRIAGE_QUIET_SECONDS", "-1"),
        ("TRIAGE_QUIET_SECONDS", "abc"),
        ("TRIAGE_QUIET_SECONDS", "nan"),
        ("TRIAGE_DEVICE", "gpu"),
        ("TRIAGE_DEVICE", "CUDA"),
        ("TRIAGE_DEVICE", "cuda:"),
        ("TRIAGE_DELIVERY_MAX_TRIES", "0"),
        ("TRIAGE_DELIVERY_MAX_TRIES", "1.5"),
        ("TRIAGE_DELIVERY_BACKOFF_SECONDS", "0"),
        ("TRIAGE_LOG_LEVEL", "verbose"),
        ("TRIAGE_LOG_LEVEL", "CRITICAL"),
    ],
)
def test_bad_values_raise_config_error_naming_the_variable(
    tmp_path: Path, variable: str, value: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env(tmp_path, **{variable: value}))
    message = str(info.value)
    assert variable in message
    # the offending text is quoted: the whole value, or for TRIAGE_PACS the part that is wrong
    assert repr(value) in message or (
        variable == "TRIAGE_PACS" and any(repr(part) in message for part in re.split("[@:]", value))
    )


def test_pacs_error_says_how_to_write_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AE@host:port"):
        load_settings(environ=env(tmp_path, TRIAGE_PACS="ORTHANC@localhost"))


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "triage.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_file_values_are_used(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'ae_title = "FROMFILE"\n'
        "port = 4243\n"
        'pacs = "PACS@10.0.0.5:11112"\n'
        "quiet_seconds = 12\n"
        "delivery_max_tries = 4\n"
        'log_level = "warning"\n'
        f'store = "{tmp_path / "filestore"}"\n',
    )
    s = load_settings(environ=env(tmp_path, TRIAGE_CONFIG=str(path)))
    assert s.ae_title == "FROMFILE"
    assert s.port == 4243
    assert s.pacs == DicomNode("PACS", "10.0.0.5", 11112)
    assert s.quiet_seconds == 12.0
    assert s.delivery_max_tries == 4
    assert s.log_level == "WARNING"
    assert s.store == str(tmp_path / "filestore")
    assert s.device == "auto"  # not in the file: the default


def test_config_file_may_set_home(tmp_path: Path) -> None:
    home = tmp_path / "filehome"
    path = write_toml(tmp_path, f'home = "{home}"\n')
    s = load_settings(environ={"TRIAGE_CONFIG": str(path)})
    assert s.home == home.resolve()
    assert s.database_url == f"sqlite:///{home.resolve() / 'catalogue.db'}"


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'port = 4243\nae_title = "FROMFILE"\n')
    s = load_settings(environ=env(tmp_path, TRIAGE_CONFIG=str(path), TRIAGE_PORT="5555"))
    assert s.port == 5555
    assert s.ae_title == "FROMFILE"


def test_bad_value_in_the_file_names_the_key_and_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env(tmp_path, TRIAGE_CONFIG=str(path)))
    assert "port" in str(info.value)
    assert str(path) in str(info.value)


def test_unknown_key_in_the_file_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = 4243\nqueit_seconds = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env(tmp_path, TRIAGE_CONFIG=str(path)))
    message = str(info.value)
    assert "TRIAGE_CONFIG" in message
    assert "queit_seconds" in message
    assert "quiet_seconds" in message  # the known names are listed


def test_bad_toml_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "port = = 3\n[unclosed\n")
    with pytest.raises(ConfigError, match="TRIAGE_CONFIG.*not valid TOML"):
        load_settings(environ=env(tmp_path, TRIAGE_CONFIG=str(path)))


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="TRIAGE_CONFIG.*no such file"):
        load_settings(environ=env(tmp_path, TRIAGE_CONFIG=str(missing)))


def test_empty_triage_config_means_no_file(tmp_path: Path) -> None:
    assert load_settings(environ=env(tmp_path, TRIAGE_CONFIG="")).port == 11112


def _cli_env(tmp_path: Path, **values: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRIAGE_")}
    return {**base, "TRIAGE_HOME": str(tmp_path), "COLUMNS": "200", **values}


def _triage_command() -> list[str]:
    script = Path(sys.executable).with_name("triage")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "triage.app.cli"]


def test_cli_config_rejects_a_bad_port_with_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [*_triage_command(), "config"],
        env=_cli_env(tmp_path, TRIAGE_PORT="99999"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "TRIAGE_PORT" in done.stderr
    assert "99999" in done.stderr
    assert "Traceback" not in done.stderr


def test_cli_config_prints_the_effective_settings(tmp_path: Path) -> None:
    done = subprocess.run(
        [*_triage_command(), "config"],
        env=_cli_env(tmp_path, TRIAGE_PORT="4321", TRIAGE_AE_TITLE="CLI_NODE"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line}
    assert lines["port"] == ["4321"]
    assert lines["ae_title"] == ["CLI_NODE"]
    assert "TRIAGE_PACS" in done.stderr  # warns that results stay in the outbox


# -- access control and TLS settings ----------------------------------------------------------


def pem(path: Path, label: str = "CERTIFICATE") -> Path:
    """A file that looks like PEM (settings check files, the TLS tests check real ones)."""
    path.write_text(f"-----BEGIN {label}-----\nMIIB\n-----END {label}-----\n")
    return path


def test_security_settings_default_to_open_and_plain(tmp_path: Path) -> None:
    s = load_settings(environ=env(tmp_path))
    assert s.allowed_aes == ()
    assert (s.tls_cert, s.tls_key, s.tls_ca) == (None, None, None)
    assert s.pacs_tls is False
    assert s.tls_required is False
    d = s.as_dict()
    assert (d["allowed_aes"], d["tls_cert"], d["pacs_tls"]) == ("", "", "false")


def test_allowed_aes_takes_titles_and_title_at_host(tmp_path: Path) -> None:
    value = " CT_SCANNER, MR1@10.0.0.7 ,US@router.hospital.example,, X-RAY@::1 "
    s = load_settings(environ=env(tmp_path, TRIAGE_ALLOWED_AES=value))
    assert s.allowed_aes == (
        AllowedAE("CT_SCANNER"),
        AllowedAE("MR1", "10.0.0.7"),
        AllowedAE("US", "router.hospital.example"),
        AllowedAE("X-RAY", "::1"),
    )
    assert (
        s.as_dict()["allowed_aes"] == "CT_SCANNER,MR1@10.0.0.7,US@router.hospital.example,X-RAY@::1"
    )


def test_blank_allowed_aes_means_any_calling_ae(tmp_path: Path) -> None:
    assert load_settings(environ=env(tmp_path, TRIAGE_ALLOWED_AES=" , ")).allowed_aes == ()


@pytest.mark.parametrize(
    ("value", "wrong"),
    [
        ("CT,BAD\\AE", "BAD\\AE"),
        ("SEVENTEEN_CHARS_X", "SEVENTEEN_CHARS_X"),
        ("CT@", ""),
        ("CT@bad host", "bad host"),
        ("CT@under_score.example", "under_score.example"),
        ("@10.0.0.1", ""),
        ("CT@-leading.example", "-leading.example"),
    ],
)
def test_bad_allowed_aes_entry_names_the_variable(tmp_path: Path, value: str, wrong: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env(tmp_path, TRIAGE_ALLOWED_AES=value))
    message = str(info.value)
    assert "TRIAGE_ALLOWED_AES" in message
    assert repr(wrong) in message  # the wrong part, quoted


def test_tls_files_are_read_and_resolved(tmp_path: Path) -> None:
    cert, key = pem(tmp_path / "node.pem"), pem(tmp_path / "node.key", "PRIVATE KEY")
    ca = pem(tmp_path / "ca.pem")
    s = load_settings(
        environ=env(
            tmp_path,
            TRIAGE_TLS_CERT=str(cert),
            TRIAGE_TLS_KEY=str(key),
            TRIAGE_TLS_CA=str(ca),
            TRIAGE_PACS_TLS="yes",
        )
    )
    assert (s.tls_cert, s.tls_key, s.tls_ca) == (cert, key, ca)
    assert s.tls_required and s.pacs_tls
    assert s.as_dict()["tls_key"] == str(key)  # the path, never the key


@pytest.mark.parametrize("variable", ["TRIAGE_TLS_CERT", "TRIAGE_TLS_KEY", "TRIAGE_TLS_CA"])
def test_missing_tls_file_names_the_variable_and_the_file(tmp_path: Path, variable: str) -> None:
    missing = tmp_path / "nowhere" / "file.pem"
    with pytest.raises(ConfigError, match="no such file") as info:
        load_settings(environ=env(tmp_path, **{variable: str(missing)}))
    assert variable in str(info.value)
    assert str(missing) in str(info.value)


def test_tls_file_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRIAGE_TLS_CA.*is a folder"):
        load_settings(environ=env(tmp_path, TRIAGE_TLS_CA=str(tmp_path)))


def test_tls_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    der = tmp_path / "node.der"
    der.write_bytes(b"\x30\x82\x01\x0a binary DER")
    with pytest.raises(ConfigError, match="TRIAGE_TLS_CERT.*not a PEM file"):
        load_settings(environ=env(tmp_path, TRIAGE_TLS_CERT=str(der)))


def test_tls_file_under_a_file_is_refused(tmp_path: Path) -> None:
    not_a_folder = pem(tmp_path / "ca.pem")
    with pytest.raises(ConfigError, match="TRIAGE_TLS_CA=.*cannot be read"):
        load_settings(environ=env(tmp_path, TRIAGE_TLS_CA=str(not_a_folder / "ca.pem")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_tls_file_is_refused(tmp_path: Path) -> None:
    key = pem(tmp_path / "node.key", "PRIVATE KEY")
    key.chmod(0)
    with pytest.raises(ConfigError, match="TRIAGE_TLS_KEY.*permission denied"):
        load_settings(environ=env(tmp_path, TRIAGE_TLS_KEY=str(key)))


@pytest.mark.parametrize(("given", "missing"), [("CERT", "KEY"), ("KEY", "CERT")])
def test_certificate_and_key_come_together(tmp_path: Path, given: str, missing: str) -> None:
    path = pem(tmp_path / "file.pem")
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env(tmp_path, **{f"TRIAGE_TLS_{given}": str(path)}))
    assert f"TRIAGE_TLS_{given} is set but TRIAGE_TLS_{missing} is not" in str(info.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("on", True), ("false", False), ("no", False)],
)
def test_pacs_tls_yes_and_no(tmp_path: Path, value: str, expected: bool) -> None:
    assert load_settings(environ=env(tmp_path, TRIAGE_PACS_TLS=value)).pacs_tls is expected


def test_bad_pacs_tls_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="TRIAGE_PACS_TLS='sometimes'.*true or false"):
        load_settings(environ=env(tmp_path, TRIAGE_PACS_TLS="sometimes"))


def test_security_settings_from_the_config_file(tmp_path: Path) -> None:
    cert, key = pem(tmp_path / "node.pem"), pem(tmp_path / "node.key", "PRIVATE KEY")
    path = write_toml(
        tmp_path,
        'allowed_aes = ["CT_SCANNER", "MR1@10.0.0.7"]\n'
        "pacs_tls = true\n"
        f'tls_cert = "{cert}"\n'
        f'tls_key = "{key}"\n',
    )
    s = load_settings(environ=env(tmp_path, TRIAGE_CONFIG=str(path)))
    assert s.allowed_aes == (AllowedAE("CT_SCANNER"), AllowedAE("MR1", "10.0.0.7"))
    assert s.pacs_tls is True
    assert (s.tls_cert, s.tls_key) == (cert, key)


def test_key_without_certificate_in_the_file_names_the_file(tmp_path: Path) -> None:
    key = pem(tmp_path / "node.key", "PRIVATE KEY")
    path = write_toml(tmp_path, f'tls_key = "{key}"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env(tmp_path, TRIAGE_CONFIG=str(path)))
    assert f"tls_key (in {path}) is set but TRIAGE_TLS_CERT is not" in str(info.value)


def test_cli_config_warns_when_any_calling_ae_is_accepted(tmp_path: Path) -> None:
    run = dict(capture_output=True, text=True, timeout=60, check=False)
    open_node = subprocess.run([*_triage_command(), "config"], env=_cli_env(tmp_path), **run)
    assert open_node.returncode == 0, open_node.stderr
    assert "TRIAGE_ALLOWED_AES is not set" in open_node.stderr
    listed = subprocess.run(
        [*_triage_command(), "config"],
        env=_cli_env(tmp_path, TRIAGE_ALLOWED_AES="CT_SCANNER,MR1@10.0.0.7"),
        **run,
    )
    assert listed.returncode == 0, listed.stderr
    assert "TRIAGE_ALLOWED_AES" not in listed.stderr
    assert "CT_SCANNER,MR1@10.0.0.7" in listed.stdout


def test_cli_config_names_an_unusable_certificate(tmp_path: Path) -> None:
    cert, key = pem(tmp_path / "node.pem"), pem(tmp_path / "node.key", "PRIVATE KEY")
    done = subprocess.run(
        [*_triage_command(), "config"],
        env=_cli_env(tmp_path, TRIAGE_TLS_CERT=str(cert), TRIAGE_TLS_KEY=str(key)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "TRIAGE_TLS_CERT" in done.stderr and "TRIAGE_TLS_KEY" in done.stderr
    assert "Traceback" not in done.stderr


# -- pull mode, DICOMweb and HL7 settings -------------------------------------------------------


def test_pull_settings_default_to_off(tmp_path: Path) -> None:
    s = load_settings(environ=env(tmp_path))
    assert s.pull_interval is None
    assert (s.pull_retrieve, s.pull_modalities, s.pacs_protocol) == (
        "c-move",
        ("CT", "MR"),
        "dimse",
    )
    assert (s.pull_overlap_minutes, s.pull_look_back_hours) == (10.0, 24.0)


def test_pull_settings_are_parsed(tmp_path: Path) -> None:
    s = load_settings(
        environ={
            **env(tmp_path),
            "TRIAGE_PULL_INTERVAL": "30",
            "TRIAGE_PULL_RETRIEVE": "C-GET",
            "TRIAGE_PULL_MODALITIES": "ct, mr ,CR",
            "TRIAGE_PACS_PROTOCOL": "dicomweb",
            "TRIAGE_DICOMWEB_URL": "http://127.0.0.1:8042/dicom-web/",
            "TRIAGE_HL7_ENDPOINT": "ris.example:2575",
        }
    )
    assert s.pull_interval == 30.0 and s.pull_retrieve == "c-get"
    assert s.pull_modalities == ("CT", "MR", "CR")
    assert s.dicomweb_url == "http://127.0.0.1:8042/dicom-web"
    assert s.hl7_endpoint == "ris.example:2575"


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TRIAGE_PULL_INTERVAL", "soon", "positive number of seconds"),
        ("TRIAGE_PULL_RETRIEVE", "wado", "use one of c-move, c-get"),
        ("TRIAGE_PULL_MODALITIES", "CT;MR", "comma list"),
        ("TRIAGE_PACS_PROTOCOL", "hl7", "use one of dimse, dicomweb"),
        ("TRIAGE_DICOMWEB_URL", "pacs.example/dicom-web", "not an http"),
        ("TRIAGE_HL7_ENDPOINT", "ris.example", "host:port"),
        ("TRIAGE_DICOMWEB_TOKEN_FILE", "/nonexistent/token", "no such file"),
    ],
)
def test_bad_pull_settings_name_the_variable(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"{variable}.*{message}"):
        load_settings(environ={**env(tmp_path), variable: value})


def test_dicomweb_secrets_come_from_files_and_are_never_printed(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    s = load_settings(
        environ={
            **env(tmp_path),
            "TRIAGE_DICOMWEB_TOKEN_FILE": str(token),
            "TRIAGE_DICOMWEB_PASSWORD": "pa55",
        }
    )
    assert s.dicomweb_secret("dicomweb_token") == "s3cret-token"
    assert s.dicomweb_secret("dicomweb_password") == "pa55"
    printed = s.as_dict()
    assert printed["dicomweb_password"] == "(set)"
    assert "s3cret" not in " ".join(printed.values()) and "pa55" not in " ".join(printed.values())


def test_s3_store_settings_keys_from_files_and_never_printed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3-secret-value\n")
    s = load_settings(
        environ={
            **env(tmp_path),
            "TRIAGE_STORE": "s3://scans/triage",
            "TRIAGE_S3_ENDPOINT": "https://s3.example:9000/",
            "TRIAGE_S3_ACCESS_KEY": "AKIDTRIAGE",
            "TRIAGE_S3_SECRET_KEY_FILE": str(secret),
            "TRIAGE_S3_REGION": "eu-central-1",
        }
    )
    assert s.s3 is not None
    assert (s.s3.endpoint, s.s3.access_key, s.s3.secret_key, s.s3.region) == (
        "https://s3.example:9000",
        "AKIDTRIAGE",
        "s3-secret-value",
        "eu-central-1",
    )
    assert "s3-secret-value" not in repr(s.s3) and "AKIDTRIAGE" not in repr(s.s3)
    printed = s.as_dict()
    assert printed["s3_access_key"] == "(set)"
    assert printed["s3_secret_key"] == ""  # given as a file: the file's path is printed
    assert printed["s3_secret_key_file"] == str(secret)
    assert "s3-secret-value" not in " ".join(printed.values())


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("TRIAGE_S3_ENDPOINT", "needs TRIAGE_S3_ENDPOINT"),
        ("TRIAGE_S3_ACCESS_KEY", "needs TRIAGE_S3_ACCESS_KEY .or TRIAGE_S3_ACCESS_KEY_FILE"),
        ("TRIAGE_S3_SECRET_KEY", "needs TRIAGE_S3_SECRET_KEY .or TRIAGE_S3_SECRET_KEY_FILE"),
    ],
)
def test_an_s3_store_without_its_server_or_keys_names_the_variable(
    tmp_path: Path, missing: str, message: str
) -> None:
    given = {
        "TRIAGE_STORE": "s3://scans",
        "TRIAGE_S3_ENDPOINT": "http://127.0.0.1:8333",
        "TRIAGE_S3_ACCESS_KEY": "a",
        "TRIAGE_S3_SECRET_KEY": "b",
    }
    del given[missing]
    with pytest.raises(ConfigError, match=f"TRIAGE_STORE='s3://scans' {message}"):
        load_settings(environ={**env(tmp_path), **given})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("TRIAGE_S3_ENDPOINT", "s3.example:9000", "not an http"),
        ("TRIAGE_S3_SECRET_KEY_FILE", "/nonexistent/secret", "no such file"),
        ("TRIAGE_S3_CA_BUNDLE", "/nonexistent/ca.pem", "no such file"),
    ],
)
def test_bad_s3_settings_name_the_variable(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=f"{variable}.*{message}"):
        load_settings(environ={**env(tmp_path), variable: value})


def test_cli_config_shows_the_s3_keys_as_set(tmp_path: Path) -> None:
    done = subprocess.run(
        [*_triage_command(), "config"],
        env=_cli_env(
            tmp_path,
            TRIAGE_STORE="s3://scans/triage",
            TRIAGE_S3_ENDPOINT="http://127.0.0.1:8333",
            TRIAGE_S3_ACCESS_KEY="AKIDCLITEST",
            TRIAGE_S3_SECRET_KEY="cli-secret-value",
            # this checkout's code, also where the installed `triage` is another checkout's
            PYTHONPATH=str(PROJECT_ROOT),
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line}
    assert lines["store"] == ["s3://scans/triage"]
    assert lines["s3_access_key"] == ["(set)"] and lines["s3_secret_key"] == ["(set)"]
    assert "cli-secret-value" not in done.stdout + done.stderr
    assert "AKIDCLITEST" not in done.stdout + done.stderr


def test_web_and_notification_settings(tmp_path: Path) -> None:
    s = load_settings(
        environ=env(
            tmp_path,
            TRIAGE_WEB_PORT="off",
            TRIAGE_VIEWER_URL="https://pacs.example/ui/app/#/study?StudyInstanceUID={study_uid}",
            TRIAGE_NOTIFY_SMTP="mail.example:587",
            TRIAGE_NOTIFY_FROM="triage@example.org",
            TRIAGE_NOTIFY_TO="a@example.org, b@example.org",
        )
    )
    assert s.web_port is None
    assert s.notify_from == "triage@example.org"
    assert s.notify_to == ("a@example.org", "b@example.org")
    assert s.web_address == "http://127.0.0.1:8080"
    with pytest.raises(ConfigError, match="TRIAGE_VIEWER_URL.*study_uid"):
        load_settings(environ=env(tmp_path, TRIAGE_VIEWER_URL="https://viewer.example/"))
    with pytest.raises(ConfigError, match="TRIAGE_WEB_PORT"):
        load_settings(environ=env(tmp_path, TRIAGE_WEB_PORT="eighty"))
    with pytest.raises(ConfigError, match="TRIAGE_NOTIFY_WEBHOOK_SECRET"):
        load_settings(environ=env(tmp_path, TRIAGE_NOTIFY_WEBHOOK="https://hooks.example/x"))
    with pytest.raises(ConfigError, match="TRIAGE_NOTIFY_FROM"):
        load_settings(environ=env(tmp_path, TRIAGE_NOTIFY_SMTP="mail.example:25"))
    with pytest.raises(ConfigError, match="not an e-mail address"):
        load_settings(environ=env(tmp_path, TRIAGE_NOTIFY_TO="nobody"))


def test_amp_is_off_unless_float16_or_bfloat16(tmp_path: Path) -> None:
    from triage.analysis.inference import AMP_DTYPES

    assert load_settings(environ=env(tmp_path)).amp == "off"
    assert load_settings(environ=env(tmp_path, TRIAGE_AMP="BFloat16")).amp == "bfloat16"
    with pytest.raises(ConfigError, match="TRIAGE_AMP"):
        load_settings(environ=env(tmp_path, TRIAGE_AMP="float8"))
    for value in AMP_DTYPES:  # the values the analysis knows are those the setting takes
        assert load_settings(environ=env(tmp_path, TRIAGE_AMP=value)).amp == value
