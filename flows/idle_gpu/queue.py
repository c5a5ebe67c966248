"""The offline job queue: YAML or JSON, from a file or an ``s3://`` object.

A malformed document is an error; a malformed job is rejected with its reason and the rest of the
queue still runs (the rejections are reported, never dropped silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flows.common.documents import parse_document, read_text
from flows.common.errors import BackendUnavailable, BadInput, bad_input_from
from flows.idle_gpu.models import OfflineJob


@dataclass
class Rejected:
    index: int
    name: str
    reason: str


@dataclass
class JobQueue:
    jobs: list[OfflineJob]
    rejected: list[Rejected] = field(default_factory=list)


def read_source(source: str) -> str:
    """The text of a local file or an ``s3://bucket/key`` object."""
    if source.startswith("s3://"):
        return _read_s3(source)
    path = Path(source)
    if not path.is_file():
        raise BadInput(f"job queue {source} not found")
    return read_text(path, "job queue")


def _read_s3(uri: str) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    from flows.common.s3 import parse_s3_uri, s3_client
    from flows.common.settings import get_settings

    u = parse_s3_uri(uri)
    if not u.prefix:
        raise BadInput(f"job queue {uri} names a bucket, not an object")
    s = get_settings().s3
    try:
        body = s3_client(s.primary_region, endpoint_url=s.endpoint_url, profile=s.profile,
                         max_attempts=3).get_object(Bucket=u.bucket, Key=u.prefix)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            raise BadInput(f"job queue {uri} not found ({code})") from None
        raise BackendUnavailable(f"job queue {uri}: {code or exc}") from None
    except BotoCoreError as exc:
        raise BackendUnavailable(f"job queue {uri}: {exc}") from None
    return body.decode("utf-8", errors="replace")


def parse_queue(text: str, source: str = "queue") -> JobQueue:
    doc: Any = parse_document(text, f"job queue {source}")
    if isinstance(doc, dict):
        doc = doc.get("jobs")
    if not isinstance(doc, list):
        raise BadInput(f"job queue {source} must be a list of jobs or a mapping with a 'jobs' list")
    jobs: list[OfflineJob] = []
    rejected: list[Rejected] = []
    seen: set[str] = set()
    for i, raw in enumerate(doc):
        name = str(raw.get("name", f"#{i}")) if isinstance(raw, dict) else f"#{i}"
        try:
            job = OfflineJob.model_validate(raw)
        except ValidationError as exc:
            rejected.append(Rejected(i, name, str(bad_input_from(exc, ""))))
            continue
        if job.name in seen:
            rejected.append(Rejected(i, name, "duplicate name"))
            continue
        seen.add(job.name)
        jobs.append(job)
    return JobQueue(jobs, rejected)


def load_queue(source: str) -> JobQueue:
    return parse_queue(read_source(source), source)
