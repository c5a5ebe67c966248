"""The log backup builds its S3 clients from the settings, per role, in one place (issue 13 item 5):
``flows.common.s3.client_for`` (the same resolution ``inferops doctor`` checks). No request is sent."""

from __future__ import annotations

import pytest

from flows.common.errors import BadInput
from flows.common.s3 import client_for, endpoint_for, region_for
from flows.common.settings import get_settings, reload_settings
from flows.log_backup.engine import BackupEngine
from flows.log_backup.models import BackupPolicy


@pytest.fixture
def settings_env(monkeypatch, tmp_path):
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    (tmp_path / "inferops.toml").write_text("")  # an empty config file: a named one that is missing is an error
    monkeypatch.setenv("INFEROPS_CONFIG", str(tmp_path / "inferops.toml"))
    yield monkeypatch
    monkeypatch.undo()
    reload_settings()


def test_roles_resolve_endpoint_and_region_from_the_settings(settings_env):
    settings_env.setenv("INFEROPS_S3__ENDPOINT_URL", "http://192.0.2.10:9000")
    settings_env.setenv("INFEROPS_S3__PRIMARY_REGION", "us-west-2")
    reload_settings()
    assert endpoint_for("primary") == endpoint_for("backup") == "http://192.0.2.10:9000"
    assert (region_for("primary"), region_for("backup")) == ("us-west-2", "eu-west-1")

    settings_env.setenv("INFEROPS_S3__BACKUP_ENDPOINT_URL", "http://192.0.2.20:9000")
    reload_settings()
    assert endpoint_for("backup") == "http://192.0.2.20:9000"
    assert endpoint_for("primary") == "http://192.0.2.10:9000"
    backup = client_for("backup")
    assert backup.meta.endpoint_url == "http://192.0.2.20:9000" and backup.meta.region_name == "eu-west-1"


def test_without_settings_the_aws_environment_decides(settings_env):
    reload_settings()
    assert endpoint_for("backup") is None  # AWS's own endpoint for the region
    settings_env.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9")
    assert endpoint_for("primary") == "http://127.0.0.1:9"
    assert client_for("primary", "ap-south-1").meta.endpoint_url == "http://127.0.0.1:9"


def test_the_engine_takes_its_clients_per_role(settings_env, tmp_path):
    settings_env.setenv("INFEROPS_S3__ENDPOINT_URL", "http://192.0.2.10:9000")
    settings_env.setenv("INFEROPS_S3__BACKUP_ENDPOINT_URL", "http://192.0.2.20:9000")
    reload_settings()
    local = BackupEngine(BackupPolicy(source=str(tmp_path), dest="s3://bkt-dst/p", dest_region="eu-west-1"))
    assert local.client.meta.endpoint_url == "http://192.0.2.20:9000" and local.source_client is None
    from_s3 = BackupEngine(BackupPolicy(source="s3://bkt-src/logs", source_region="us-east-1",
                                        dest="s3://bkt-dst/p", dest_region="eu-west-1", read_timeout_s=7))
    assert from_s3.source_client.meta.endpoint_url == "http://192.0.2.10:9000"
    assert from_s3.source_client.meta.region_name == "us-east-1"
    assert from_s3.client.meta.config.read_timeout == 7


def test_a_bad_setting_is_bad_input_naming_it(settings_env):
    settings_env.setenv("INFEROPS_S3__PRIMARY_REGION", "not a region")
    reload_settings()
    with pytest.raises(BadInput, match="unknown region 'not a region'"):
        region_for("primary")
    settings_env.setenv("INFEROPS_S3__PRIMARY_REGION", "us-east-1")
    settings_env.setenv("INFEROPS_SSH__PORT", "twenty-two")  # any bad setting: named, never a traceback
    get_settings.cache_clear()
    with pytest.raises(BadInput, match="(?i)port"):
        client_for("backup")
