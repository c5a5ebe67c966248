"""The S3 adapter: clients with explicit regions, the standard AWS environment, adaptive retries.

Rooms ask here for their clients; none builds its own. :func:`client_for` is the one place that
turns the settings (``s3.profile``, ``s3.endpoint_url``, ``s3.backup_endpoint_url``) into a client
for a *role*: ``primary`` (the source buckets) or ``backup`` (the cross-region backup bucket), the
same resolution ``inferops doctor`` checks. :func:`s3_client` is the lower-level constructor.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from flows.common.errors import BadInput

# AWS partitions' region shape (us-east-1, eu-central-2, ap-southeast-5, us-gov-west-1, cn-north-1 …)
_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")

Role = Literal["primary", "backup"]
ROLES: tuple[Role, ...] = ("primary", "backup")


def validate_region(region: str) -> str:
    if not isinstance(region, str) or not region or not _REGION.fullmatch(region):
        raise BadInput(f"unknown region {region!r} (expected e.g. us-east-1)")
    return region


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, rel: str) -> str:
        rel = rel.lstrip("/")
        return f"{self.prefix.rstrip('/')}/{rel}" if self.prefix else rel


def parse_s3_uri(uri: str) -> S3Uri:
    """``s3://BUCKET[/PREFIX]``: BadInput for anything else (never echoes more than the URI)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise BadInput(f"malformed S3 URI {uri!r} (expected s3://BUCKET[/PREFIX])")
    rest = uri[5:]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket:  # never echo credentials pasted into the URI (the message shows it redacted)
        raise BadInput(f"malformed S3 URI {uri!r}: credentials do not belong in an S3 URI (use AWS_PROFILE)")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise BadInput(f"malformed S3 URI {uri!r}: bad bucket name {bucket!r}")
    try:
        size = len(prefix.encode("utf-8"))
    except UnicodeEncodeError:  # e.g. undecodable bytes of a command-line argument
        raise BadInput(f"malformed S3 URI {uri!r}: the prefix is not valid UTF-8") from None
    if size > 1024 or any(c in prefix for c in "\0\r\n"):
        raise BadInput(f"malformed S3 URI {uri!r}: the prefix is not a valid S3 key prefix")
    return S3Uri(bucket=bucket, prefix=prefix.strip("/"))


def _parse_s3_time(value: Any) -> Any:
    """S3's ISO-8601 times through the stdlib: botocore's default goes through dateutil (~0.15 ms per
    key, 1.5 s of CPU per 10k listed keys). Same timezone-aware datetimes."""
    from botocore.utils import parse_timestamp

    if isinstance(value, str) and value.endswith("Z") and "T" in value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    return parse_timestamp(value)


_shared: dict[str, Any] = {}
_shared_lock = threading.RLock()


def _botocore_session(profile: str | None) -> Any:
    """A fresh botocore session (credentials are resolved per session, as the environment says)
    sharing one data loader: the S3 model and endpoint rules are parsed once per process, not once
    per client (~60 ms each)."""
    import botocore.session
    from botocore.loaders import create_loader

    core = botocore.session.Session(profile=profile or os.environ.get("AWS_PROFILE") or None)
    with _shared_lock:
        loader = _shared.get("loader")
        if loader is None:
            loader = _shared["loader"] = create_loader(core.get_config_variable("data_path"))
    core.register_component("data_loader", loader)
    # what awscli does for fast listings: a cheaper timestamp parser on the session's parser factory
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=_parse_s3_time)
    return core


def s3_client(region: str, *, endpoint_url: str | None = None, profile: str | None = None,
              max_pool: int = 32, max_attempts: int = 8, read_timeout: float | None = None,
              connect_timeout: float | None = None) -> Any:
    """A boto3 S3 client pinned to ``region``.

    The endpoint is ``endpoint_url`` or, as boto3 does itself, ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL``. Retries are botocore's ``adaptive`` mode (exponential backoff with
    jitter on throttling, 5xx, connection errors and read timeouts, plus client-side rate limiting).
    ``read_timeout`` / ``connect_timeout`` default to botocore's (60 s each).
    """
    import boto3.session
    from botocore.config import Config

    validate_region(region)
    with _shared_lock:  # boto3 appends its data path to the (shared) loader on every session
        session = boto3.session.Session(botocore_session=_botocore_session(profile), region_name=region)
        paths = session._loader.search_paths
        paths[:] = list(dict.fromkeys(paths))
    timeouts = {k: v for k, v in (("read_timeout", read_timeout), ("connect_timeout", connect_timeout))
                if v is not None}
    cfg = Config(
        region_name=region,
        retries={"mode": "adaptive", "max_attempts": max_attempts},
        max_pool_connections=max_pool,
        s3={"addressing_style": "path" if endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") else "auto"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        **timeouts,
    )
    kwargs: dict[str, Any] = {"config": cfg}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return session.client("s3", **kwargs)


# ------------------------------------------------------------------------------ clients from settings

def _settings() -> Any:
    from flows.common.settings import get_settings  # bad settings: BadInput naming the setting

    return get_settings()


def endpoint_for(role: Role, settings: Any = None) -> str | None:
    """The configured endpoint of ``role``: ``s3.endpoint_url`` for the primary buckets,
    ``s3.backup_endpoint_url`` (else ``s3.endpoint_url``) for the backup bucket; else
    ``AWS_ENDPOINT_URL_S3``; None means AWS's own endpoint for the region."""
    if role not in ROLES:
        raise ValueError(f"unknown S3 role {role!r}")
    s = (settings or _settings()).s3
    configured = s.backup_endpoint_url or s.endpoint_url if role == "backup" else s.endpoint_url
    return configured or os.environ.get("AWS_ENDPOINT_URL_S3") or None


def region_for(role: Role, settings: Any = None) -> str:
    s = (settings or _settings()).s3
    return validate_region(s.backup_region if role == "backup" else s.primary_region)


def client_for(role: Role, region: str | None = None, **kwargs: Any) -> Any:
    """The S3 client of ``role`` from the settings: its endpoint, the settings' profile, and
    ``region`` (default: the role's configured region). ``kwargs`` go to :func:`s3_client`."""
    settings = _settings()
    kwargs.setdefault("profile", settings.s3.profile)
    kwargs.setdefault("endpoint_url", endpoint_for(role, settings))
    return s3_client(region or region_for(role, settings), **kwargs)


# ------------------------------------------------------------------------------------ credentials

# S3 (and STS) error codes that mean the credentials are missing, wrong, expired or not allowed:
# retrying cannot heal them.
CREDENTIAL_ERROR_CODES = frozenset({
    "AccessDenied", "AllAccessDisabled", "AuthFailure", "ExpiredToken", "ExpiredTokenException",
    "InvalidAccessKeyId", "InvalidClientTokenId", "InvalidToken", "SignatureDoesNotMatch",
    "TokenRefreshRequired", "UnrecognizedClientException",
})


def credential_error(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an error it was raised from) says the AWS credentials are missing or
    were rejected: botocore's NoCredentialsError, PartialCredentialsError, ProfileNotFound and the
    SSO token errors, or a ClientError with a code in :data:`CREDENTIAL_ERROR_CODES`. Such an error
    is not transient: retry rules must not retry it."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
        ProfileNotFound,
        SSOTokenLoadError,
        UnauthorizedSSOTokenError,
    )

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError, ProfileNotFound, SSOTokenLoadError,
                            UnauthorizedSSOTokenError)):
            return True
        if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in CREDENTIAL_ERROR_CODES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# ------------------------------------------------------------------------------------ stall logging

def _key_of(request_dict: dict[str, Any]) -> str:
    """The object key a request was for, from its URL (path-style or virtual-hosted)."""
    path = unquote(urlsplit(str(request_dict.get("url", ""))).path)
    return path.lstrip("/")


def log_retries(client: Any, log: logging.Logger | logging.LoggerAdapter,
                describe: Any = None) -> None:
    """Log every request botocore is about to retry after a timeout or a dropped connection (a
    stalled endpoint), naming the operation and the object: botocore itself retries silently.

    ``describe(key_path)`` may turn the request path (``bucket/key`` or ``key``) into what the user
    knows (a file name). Throttling and 5xx answers are not logged here: they are routine.
    """
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    read_timeout = client.meta.config.read_timeout
    retries = client.meta.config.retries or {}
    max_attempts = retries.get("total_max_attempts") or (retries.get("max_attempts") or 0) + 1

    def on_retry(attempts: int = 0, caught_exception: Exception | None = None,
                 request_dict: dict[str, Any] | None = None, operation: Any = None, **_: Any) -> None:
        if not isinstance(caught_exception, (BotoConnectionError, HTTPClientError)):
            return None
        where = _key_of(request_dict or {})
        if describe is not None:
            where = describe(where)
        what = type(caught_exception).__name__
        if what == "ReadTimeoutError":
            what = f"no answer within the {read_timeout:g} s read timeout"
        then = "retrying" if attempts < max_attempts else "giving up"
        log.warning("%s: S3 %s stalled (%s), attempt %d of %d; %s", where,
                    getattr(operation, "name", "request"), what, attempts, max_attempts, then)
        return None  # never decides: botocore's retry handler does

    client.meta.events.register("needs-retry.s3", on_retry)
