"""Settings: defaults, every TRIAGE_* variable, bad values named in the error, the TOML file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from triage.config import PROJECT_ROOT, DicomNode, Settings, load_settings
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
    }
    assert all(isinstance(v, str) for v in d.values())
    assert d["pacs"] == ""
    assert d["port"] == "11112"


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
    return [sys.executable, "-m", "triage.cli"]


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
