"""The S3 fixture itself: moto's standalone server, two regions, real HTTP."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
import uuid

import botocore.exceptions
import pytest

from flows.common.s3 import s3_client


def _bucket(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_two_regions_with_location_constraint(moto_s3):
    assert moto_s3.regions == ("us-east-1", "eu-west-1")
    primary = moto_s3.create_bucket(_bucket("primary"), "us-east-1")
    backup = moto_s3.create_bucket(_bucket("backup"), "eu-west-1")

    s3 = moto_s3.client("eu-west-1")
    assert s3.get_bucket_location(Bucket=backup)["LocationConstraint"] == "eu-west-1"
    # us-east-1 is reported as no constraint, as AWS does
    assert s3.get_bucket_location(Bucket=primary)["LocationConstraint"] in (None, "")


def test_put_get_over_http_and_env_for_the_project_client(moto_s3):
    bucket = moto_s3.create_bucket(_bucket("rt"), "eu-west-1")
    body = os.urandom(4096)
    moto_s3.client("eu-west-1").put_object(Bucket=bucket, Key="a/b.log", Body=body)

    # the project's adapter finds the server through AWS_ENDPOINT_URL_S3 set by the fixture
    assert os.environ["AWS_ENDPOINT_URL_S3"] == moto_s3.endpoint
    assert moto_s3.env()["AWS_ENDPOINT_URL_S3"].startswith("http://127.0.0.1:")
    got = s3_client("eu-west-1").get_object(Bucket=bucket, Key="a/b.log")["Body"].read()
    assert got == body

    # and it really is HTTP on loopback: an anonymous GET is refused, a presigned one works
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{moto_s3.endpoint}/{bucket}/a/b.log", timeout=10)
    assert denied.value.code == 403
    url = moto_s3.client("eu-west-1").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "a/b.log"}, ExpiresIn=60)
    assert url.startswith(f"{moto_s3.endpoint}/{bucket}/a/b.log?")
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read() == body


def test_reset_forgets_buckets(moto_server_factory):
    server = moto_server_factory(durable=False)
    bucket = server.create_bucket(_bucket("gone"), "us-east-1")
    server.reset()
    names = [b["Name"] for b in server.client().list_buckets()["Buckets"]]
    assert bucket not in names


def test_private_server_kill_and_durable_restart(moto_server_factory):
    server = moto_server_factory(durable=True)
    port = server.port
    bucket = server.create_bucket(_bucket("crash"), "eu-west-1")
    server.client("eu-west-1").put_object(Bucket=bucket, Key="k", Body=b"kept")

    server.kill()
    assert not server.running
    with pytest.raises(botocore.exceptions.EndpointConnectionError):
        server.client("eu-west-1", retries={"max_attempts": 1}).head_bucket(Bucket=bucket)

    server.restart()
    assert server.port == port
    got = server.client("eu-west-1").get_object(Bucket=bucket, Key="k")["Body"].read()
    assert got == b"kept"


def test_non_durable_restart_starts_empty(moto_server_factory):
    server = moto_server_factory(durable=False)
    bucket = server.create_bucket(_bucket("empty"), "us-east-1")
    server.restart()
    with pytest.raises(botocore.exceptions.ClientError):
        server.client().head_bucket(Bucket=bucket)
