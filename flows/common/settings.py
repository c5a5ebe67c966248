"""One typed settings object for every pipeline.

Read, in increasing priority, from built-in defaults, an optional ``inferops.toml`` (path in
``INFEROPS_CONFIG``, else ``./inferops.toml``), and ``INFEROPS_*`` environment variables
(nested fields use ``__``, e.g. ``INFEROPS_S3__PRIMARY_REGION``).

The standard AWS environment is honoured by boto3 itself (``AWS_PROFILE``, ``AWS_REGION``,
``AWS_ENDPOINT_URL_S3``); the fields here only override it when set. Secrets are ``SecretStr`` so
that they never print in logs, artifacts or ``demo-output/``.

Safe by default: with nothing configured there is no inventory (SSH goes nowhere), no Prometheus, no
S3 endpoint, and local state (the drbd severities, builds, the file:// model registry) lives in the
checkout's ``.inferops/`` whatever the working directory (``INFEROPS_STATE_DIR`` moves it).
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)


def _http_url(v: str | None) -> str | None:
    """An http(s)://HOST[:PORT][/path] URL (or unset). The value is never echoed: it may hold a password.
    Malformed, it failed deep in a run (``internal error: ValueError: Invalid IPv6 URL``, or only after
    the work was done) instead of naming the setting."""
    if not v:
        return v
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 -- raises on a port out of range or not a number
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({' '.join(str(exc).split())[:80]})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() or not c.isprintable()
                                                                         for c in v):
        raise ValueError("expected an http(s)://HOST[:PORT] URL")
    return v


def _registry_uri(v: str) -> str:
    if not v:
        return v
    if v.startswith("s3://"):
        from flows.common.errors import BadInput
        from flows.common.s3 import parse_s3_uri

        try:
            parse_s3_uri(v)
        except BadInput:
            raise ValueError("expected s3://BUCKET/PREFIX (a valid bucket name) or file://DIR") from None
    elif not v.startswith("file://") or len(v) == len("file://"):
        raise ValueError("expected s3://BUCKET/PREFIX or file://DIR")
    return v


class S3Settings(BaseModel):
    primary_region: str = Field("us-east-1", description="Region of the primary (source) buckets")
    backup_region: str = Field("eu-west-1", description="Region of the cross-region backup bucket")
    endpoint_url: str | None = Field(
        None, description="S3 endpoint override; defaults to AWS_ENDPOINT_URL_S3 / AWS's own"
    )
    backup_endpoint_url: str | None = Field(None, description="Endpoint for the backup region, if different")
    model_registry: str = Field(
        "",
        description="Model registry: s3://bucket/prefix, or file://DIR; default: model-registry in the state folder",
    )
    profile: str | None = Field(None, description="AWS profile; defaults to AWS_PROFILE")

    _urls = field_validator("endpoint_url", "backup_endpoint_url")(_http_url)
    _registry = field_validator("model_registry")(_registry_uri)


class PrometheusSettings(BaseModel):
    url: str | None = Field(None, description="Prometheus base URL, e.g. http://prometheus:9090")
    timeout_s: float = Field(10.0, gt=0, le=3600, description="Seconds per Prometheus request")
    bearer_token: SecretStr | None = None
    pushgateway: str | None = Field(None, description="Pushgateway URL for batch-job metrics, e.g. "
                                                      "http://pushgateway:9091 (k8s-pool pods have no textfile dir)")

    _urls = field_validator("url", "pushgateway")(_http_url)


class KubeSettings(BaseModel):
    context: str | None = Field(None, description="kubeconfig context; in-cluster config when unset and available")
    kubeconfig: str | None = Field(None, description="kubeconfig path; defaults to KUBECONFIG / ~/.kube/config")
    namespace: str = "inference"


class SSHSettings(BaseModel):
    user: str = "root"
    key_file: str | None = Field(None, description="private key path; the agent/default keys when unset")
    port: int = Field(22, ge=1, le=65535)
    connect_timeout_s: float = Field(5.0, gt=0, le=600)
    known_hosts: str | None = Field(None, description="known_hosts path; unset disables host-key checks (set it in production)")


class LocalStackSettings(BaseModel):
    """`make up` (flows/common/localstack.py): the local Prefect server, UI and workers."""

    port: int = Field(4200, ge=1, le=65535, description="Port of the local Prefect server and UI on 127.0.0.1")
    reuse_server: bool = Field(False, description="Deploy into a healthy Prefect server already on the port "
                                                  "(one `make up` did not start); refused otherwise")


def default_state_dir() -> Path:
    """``<checkout>/.inferops``: ``INFEROPS_HOME`` (the worker's code location), else the checkout this
    package runs from, else (an installed wheel) ``$XDG_STATE_HOME/inferops``."""
    home = os.environ.get("INFEROPS_HOME")
    if home:
        return Path(home) / ".inferops"
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "flows").is_dir():
        return root / ".inferops"
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "inferops"


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
    local: LocalStackSettings = LocalStackSettings()
    inventory: str | None = Field(None, description="Ansible inventory (a path, or a name under inventories/); "
                                                    "unset: no SSH anywhere. The samples under inventories/ use "
                                                    "documentation addresses: copy one and edit it")
    state_dir: Path = Field(default_factory=default_state_dir,
                            description="Local state: drbd severities, builds, the file:// model registry")

    @model_validator(mode="after")
    def _registry_in_state_dir(self) -> InferopsSettings:
        if not self.s3.model_registry:
            self.s3.model_registry = f"file://{Path(self.state_dir).absolute() / 'model-registry'}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        named = os.environ.get("INFEROPS_CONFIG")  # empty: unset
        toml_path = Path(named or "inferops.toml")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        elif named:  # a file the user named is not optional: ignored, every setting in it was lost silently
            raise ValueError("a folder, not a file" if toml_path.is_dir() else "no such file")
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

    config = os.environ.get("INFEROPS_CONFIG") or "inferops.toml"
    try:
        return InferopsSettings()
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False)
        parts = []
        for err in errs[:3]:
            loc = [str(x) for x in err.get("loc", ())]
            env = "INFEROPS_" + "__".join(loc).upper()
            msg = str(err.get("msg", "")).removeprefix("Value error, ")
            parts.append(f"{env} (or {'.'.join(loc)} in {config}): {msg}")
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


def setting_name(loc: tuple) -> str:
    """``("prometheus", "timeout_s")`` -> ``prometheus.timeout_s (INFEROPS_PROMETHEUS__TIMEOUT_S)``."""
    parts = [str(x) for x in loc if not isinstance(x, int)]
    return f"{'.'.join(parts)} (INFEROPS_{'__'.join(p.upper() for p in parts)})"


def settings_with_problems() -> tuple[InferopsSettings, dict[str, list[str]]]:
    """The settings, keeping every section that is valid; bad ones fall back to their defaults.

    Returns the settings and ``{section: ["<setting name>: <problem>", ...]}`` for each bad section
    (``config`` for an unreadable TOML file, whose settings are then ignored). Never raises for bad
    configuration: ``inferops doctor`` fails only the rows the bad settings belong to.
    """
    problems: dict[str, list[str]] = {}
    cls: type[InferopsSettings] = InferopsSettings
    try:
        InferopsSettings.settings_customise_sources(InferopsSettings, *([None] * 4))  # parse the TOML file
    except (ValueError, OSError) as exc:  # TOMLDecodeError is a ValueError
        path = os.environ.get("INFEROPS_CONFIG") or "inferops.toml"
        problems["config"] = [f"{path}: {' '.join(str(exc).split())[:200]}"]
        cls = _EnvOnlySettings
    overrides: dict[str, Any] = {}
    dropped: dict[str, str] = {}  # env variables that could not even be parsed, left out while loading
    try:
        for _ in range(4):
            try:
                return cls(**overrides), problems
            except SettingsError as exc:  # e.g. INFEROPS_PROMETHEUS='{': a group of settings as bad JSON
                field = re.search(r'field "([^"]+)"', str(exc))
                var = f"INFEROPS_{field.group(1).upper()}" if field else ""
                if not field or var not in os.environ:
                    problems.setdefault("config", []).append(" ".join(str(exc).split())[:200])
                    cls = _EnvOnlySettings
                    continue
                problems.setdefault(field.group(1), []).append(
                    f"{var}: not valid JSON for a group of settings (set its fields instead, e.g. {var}__URL)")
                dropped[var] = os.environ.pop(var)
            except ValidationError as exc:
                for err in exc.errors(include_url=False, include_input=False):
                    loc = tuple(err.get("loc", ())) or ("config",)
                    section = str(loc[0])
                    msg = str(err.get("msg", "")).removeprefix("Value error, ")
                    problems.setdefault(section, []).append(f"{setting_name(loc)}: {msg}")
                    if section in cls.model_fields:
                        overrides[section] = cls.model_fields[section].get_default(call_default_factory=True)
    finally:
        os.environ.update(dropped)
    return _EnvOnlySettings.model_construct(), problems  # pragma: no cover - defaults always validate


class _EnvOnlySettings(InferopsSettings):
    """The settings without ``inferops.toml`` (when it cannot be read)."""

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, env_settings


@lru_cache(maxsize=1)
def get_settings() -> InferopsSettings:
    return load_settings()


def reload_settings() -> InferopsSettings:
    get_settings.cache_clear()
    return get_settings()
