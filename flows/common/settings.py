"""One typed settings object for every pipeline.

Read, in increasing priority, from built-in defaults, an optional ``inferops.toml`` (path in
``INFEROPS_CONFIG``, else ``./inferops.toml``), and ``INFEROPS_*`` environment variables
(nested fields use ``__``, e.g. ``INFEROPS_S3__PRIMARY_REGION``).

The standard AWS environment is honoured by boto3 itself (``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL_S3``); the fields here only override it when set. Secrets are ``SecretStr`` so
that they never print in logs, artifacts or ``demo-output/``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)


class S3Settings(BaseModel):
    primary_region: str = Field("us-east-1", description="Region of the primary (source) buckets")
    backup_region: str = Field("eu-west-1", description="Region of the cross-region backup bucket")
    endpoint_url: str | None = Field(
        None, description="S3 endpoint override; defaults to AWS_ENDPOINT_URL_S3 / AWS's own"
    )
    backup_endpoint_url: str | None = Field(None, description="Endpoint for the backup region, if different")
    model_registry: str = Field(
        "file://.inferops/model-registry",
        description="Model registry: s3://bucket/prefix, or file://DIR for the embedded default",
    )
    profile: str | None = Field(None, description="AWS profile; defaults to AWS_PROFILE")


class PrometheusSettings(BaseModel):
    url: str | None = Field(None, description="Prometheus base URL, e.g. http://prometheus:9090")
    timeout_s: float = 10.0
    bearer_token: SecretStr | None = None
    pushgateway: str | None = Field(None, description="Pushgateway URL for batch-job metrics, e.g. "
                                                      "http://pushgateway:9091 (k8s-pool pods have no textfile dir)")


class KubeSettings(BaseModel):
    context: str | None = Field(None, description="kubeconfig context; in-cluster config when unset and available")
    kubeconfig: str | None = Field(None, description="kubeconfig path; defaults to KUBECONFIG / ~/.kube/config")
    namespace: str = "inference"


class SSHSettings(BaseModel):
    user: str = "root"
    key_file: str | None = Field(None, description="private key path; the agent/default keys when unset")
    port: int = 22
    connect_timeout_s: float = 5.0
    known_hosts: str | None = Field(None, description="known_hosts path; unset disables host-key checks (set it in production)")


class InferopsSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="INFEROPS_",
        env_nested_delimiter="__",
        extra="ignore",
        toml_file=None,
    )

    s3: S3Settings = S3Settings()
    prometheus: PrometheusSettings = PrometheusSettings()
    kube: KubeSettings = KubeSettings()
    ssh: SSHSettings = SSHSettings()
    inventory: str = Field("inventories/production/hosts.yml", description="Ansible inventory path")
    state_dir: Path = Field(Path(".inferops"), description="Local state: demo DB, caches, registry")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("INFEROPS_CONFIG", "inferops.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    def redacted(self) -> dict[str, Any]:
        """A dict safe to print: SecretStr fields stay masked."""
        return self.model_dump(mode="json")


def load_settings() -> InferopsSettings:
    """:class:`InferopsSettings` from the environment and the config file; a bad value or an unreadable
    file is a :class:`~flows.common.errors.BadInput` naming the setting (``INFEROPS_SSH__PORT`` and its
    key in the file) or the file, never a traceback. The value itself is not echoed (it may be secret)."""
    from pydantic import ValidationError

    from flows.common.errors import BadInput

    config = os.environ.get("INFEROPS_CONFIG", "inferops.toml")
    try:
        return InferopsSettings()
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False)
        parts = []
        for err in errs[:3]:
            loc = [str(x) for x in err.get("loc", ())]
            env = "INFEROPS_" + "__".join(loc).upper()
            parts.append(f"{env} (or {'.'.join(loc)} in {config}): {err.get('msg', '')}")
        more = f" (+{len(errs) - 3} more)" if len(errs) > 3 else ""
        raise BadInput("bad setting " + "; ".join(parts) + more) from None
    except SettingsError as exc:  # e.g. INFEROPS_PROMETHEUS='{' (a nested setting given as bad JSON)
        import re

        field = re.search(r'field "([^"]+)"', str(exc))
        if field and "EnvSettingsSource" in str(exc):
            raise BadInput(f"bad setting INFEROPS_{field.group(1).upper()}: not valid JSON for a group of settings "
                           f"(set its fields instead, e.g. INFEROPS_{field.group(1).upper()}__URL)") from None
        raise BadInput(f"config file {config} (INFEROPS_CONFIG): {' '.join(str(exc).split())[:160]}") from None
    except (OSError, ValueError) as exc:  # the TOML file: unreadable, not UTF-8, not TOML
        why = " ".join(str(exc).split())[:160]
        raise BadInput(f"config file {config} (INFEROPS_CONFIG): {why}") from None


@lru_cache(maxsize=1)
def get_settings() -> InferopsSettings:
    return load_settings()


def reload_settings() -> InferopsSettings:
    get_settings.cache_clear()
    return get_settings()
