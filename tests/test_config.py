"""The one config loader: example configs load; bad keys, types and ranges fail with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CONFIGS, run_cli

from capture.config import VehicleConfig
from pipeline.config import NightlyConfig, NoticeConfig, config_hash, load_config, load_kind
from pipeline.errors import ConfigError


@pytest.mark.parametrize("name", ["vehicle", "nightly", "notice"])
def test_example_configs_load(name: str) -> None:
    cfg = load_kind(CONFIGS / f"{name}.toml", environ={})
    assert len(config_hash(cfg)) == 64


def test_example_values_are_typed_and_frozen() -> None:
    v = load_config(CONFIGS / "vehicle.toml", VehicleConfig, kind="vehicle", environ={})
    assert v.trigger.every_meters == 5.0
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError on frozen
        v.trigger.every_meters = 3  # type: ignore[misc]
    n = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={})
    # Relative paths resolve against the config file's folder.
    assert n.publish.notice == (CONFIGS / "notice.toml").resolve()
    notice = load_config(n.publish.notice, NoticeConfig, kind="notice", environ={})
    assert notice.security_measures


def test_example_nightly_config_redacts_at_the_measured_thresholds() -> None:
    """The nightly job must not redact less than the evaluation measured: its thresholds are
    the detector defaults tuned in docs/redaction.md, not higher."""
    from redact.config import DetectorSection
    from redact.detectors import plate_threshold

    n = load_config(CONFIGS / "nightly.toml", NightlyConfig, kind="nightly", environ={}).redact.detector
    tuned = DetectorSection()
    assert n.resolved_plate_backend() != "none"  # the nightly job redacts plates
    assert n.face_threshold <= tuned.face_threshold
    # In effect: a plate threshold left unset is the plate model's calibrated default.
    assert plate_threshold(n) <= plate_threshold(tuned)


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "vehicle.toml"
    p.write_text(text)
    return p


BASE = (CONFIGS / "vehicle.toml").read_text()


@pytest.mark.parametrize(
    ("old", "new", "expect"),
    [
        ("every_meters = 5.0", "every_metres = 5.0", "unknown key 'trigger.every_metres'"),
        ("every_meters = 5.0", 'every_meters = "far"', "key 'trigger.every_meters'"),
        ("every_meters = 5.0", "every_meters = -1", "greater than 0"),
        ("port = 2947", "port = 99999", "key 'gps.port'"),
        ('source = "gpsd"', 'source = "glonass"', "key 'gps.source'"),
        ("[privacy]", "[privacy]\nzone = 'x.geojson'", "unknown key 'privacy.zone'"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, old: str, new: str, expect: str) -> None:
    assert old in BASE
    p = _write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ConfigError) as e:
        load_config(p, VehicleConfig, kind="vehicle", environ={})
    assert str(p) in str(e.value)
    assert expect in str(e.value)


def test_not_toml(tmp_path: Path) -> None:
    p = _write(tmp_path, "[vehicle\nid=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(p, VehicleConfig, kind="vehicle", environ={})


def test_env_overrides(tmp_path: Path) -> None:
    p = _write(tmp_path, BASE)
    env = {"STREETVEIL_VEHICLE__TRIGGER__EVERY_METERS": "12.5", "STREETVEIL_VEHICLE__GPS__HOST": "gps.local"}
    v = load_config(p, VehicleConfig, kind="vehicle", environ=env)
    assert v.trigger.every_meters == 12.5
    assert v.gps.host == "gps.local"
    with pytest.raises(ConfigError, match="STREETVEIL_VEHICLE__TRIGGER__EVERY_METRES"):
        load_config(p, VehicleConfig, kind="vehicle", environ={"STREETVEIL_VEHICLE__TRIGGER__EVERY_METRES": "3"})


def test_cli_misspelt_key_exit_2(tmp_path: Path) -> None:
    p = _write(tmp_path, BASE.replace("every_meters", "every_metres", 1))
    r = run_cli("config", "check", str(p))
    assert r.returncode == 2
    assert "every_metres" in r.stderr and str(p) in r.stderr
    assert "Traceback" not in r.stderr


def test_one_rule_tells_a_nightly_config_from_a_redact_config(tmp_path: Path) -> None:
    from pipeline.config import is_nightly_config

    assert is_nightly_config(CONFIGS / "nightly.toml")
    redact = tmp_path / "redact.toml"
    redact.write_text("[detector]\nface_threshold = 0.25\n")
    broken = tmp_path / "broken.toml"
    broken.write_text("[redact\n")
    assert not is_nightly_config(redact) and not is_nightly_config(broken)
    assert not is_nightly_config(tmp_path / "missing.toml")
