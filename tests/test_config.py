import json
from pathlib import Path

import pytest

from elimity_scim.connector.config import env_name, resolve, secret_values
from elimity_scim.connector.errors import ConfigurationError
from elimity_scim.source import ScimSource

MANIFEST = ScimSource().manifest()
BASE = {"ELIMITY_SCIM_BASE_URL": "https://scim.example.test/v2"}


def test_env_names_are_upper_snake_case() -> None:
    assert env_name("scim", "baseUrl") == "ELIMITY_SCIM_BASE_URL"
    assert env_name("scim", "pageSize") == "ELIMITY_SCIM_PAGE_SIZE"
    assert env_name("scim", "password") == "ELIMITY_SCIM_PASSWORD"


def test_defaults_fill_settings_and_empty_username_means_bearer() -> None:
    environ = {**BASE, "ELIMITY_SCIM_PASSWORD": "s3cret", "ELIMITY_SCIM_USERNAME": ""}
    values = resolve(MANIFEST, config_file=None, environ=environ)
    assert values["baseUrl"] == "https://scim.example.test/v2"
    assert values["username"] is None
    assert values["password"] == "s3cret"
    assert values["pageSize"] == 100
    assert values["requestTimeout"] == 60


def test_environment_wins_over_file_and_set_wins_over_both(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"baseUrl": "https://file.test/v2", "password": "p", "pageSize": 10})
    )
    environ = {
        "ELIMITY_SCIM_BASE_URL": "https://env.test/v2",
        "ELIMITY_SCIM_PAGE_SIZE": "20",
    }
    values = resolve(
        MANIFEST, config_file=config, environ=environ, overrides=["pageSize=30"]
    )
    assert values["baseUrl"] == "https://env.test/v2"
    assert values["pageSize"] == 30
    assert values["password"] == "p"


def test_secret_from_file(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\n")
    environ = {**BASE, "ELIMITY_SCIM_PASSWORD_FILE": str(secret)}
    values = resolve(MANIFEST, config_file=None, environ=environ)
    assert values["password"] == "from-file"
    assert secret_values(MANIFEST, values) == ["from-file"]


def test_secret_and_secret_file_together_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("x")
    environ = {
        **BASE,
        "ELIMITY_SCIM_PASSWORD": "y",
        "ELIMITY_SCIM_PASSWORD_FILE": str(secret),
    }
    with pytest.raises(ConfigurationError, match="either ELIMITY_SCIM_PASSWORD or"):
        resolve(MANIFEST, config_file=None, environ=environ)


def test_missing_required_option_names_it() -> None:
    with pytest.raises(
        ConfigurationError,
        match=r"Password \(password\): set ELIMITY_SCIM_PASSWORD or "
        r"ELIMITY_SCIM_PASSWORD_FILE",
    ):
        resolve(MANIFEST, config_file=None, environ=BASE)


def test_unknown_config_file_key_is_a_typo(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"baseURL": "https://x.test", "password": "p"}))
    with pytest.raises(ConfigurationError, match="unknown key\\(s\\) baseURL"):
        resolve(MANIFEST, config_file=config, environ={})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("pageSize=abc", "expected a whole number"),
        ("pageSize=0", "expected 1 to 10000"),
        ("password=x", "--set only takes settings"),
        ("nope=1", "--set takes setting=value"),
    ],
)
def test_invalid_overrides(override: str, message: str) -> None:
    environ = {**BASE, "ELIMITY_SCIM_PASSWORD": "p"}
    with pytest.raises(ConfigurationError, match=message):
        resolve(MANIFEST, config_file=None, environ=environ, overrides=[override])


def test_invalid_secret_value_is_not_shown(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"baseUrl": "https://x.test", "password": 12345}))
    with pytest.raises(ConfigurationError) as info:
        resolve(MANIFEST, config_file=config, environ={})
    assert "12345" not in str(info.value)
    assert "Password must be a string" in str(info.value)
