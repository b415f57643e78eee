"""moto's S3 server speaks the real protocol: round trip, multipart, presigned GET."""

from __future__ import annotations

import os

import httpx

from paddock.testkit.s3 import S3Server


def test_round_trip_and_multipart() -> None:
    with S3Server() as s3:
        assert s3.endpoint.startswith("http://127.0.0.1:")
        bucket = s3.create_bucket("testkit-s3-roundtrip")
        assert s3.create_bucket(bucket) == bucket  # idempotent
        client = s3.client()

        client.put_object(Bucket=bucket, Key="small.txt", Body=b"hello")
        assert client.get_object(Bucket=bucket, Key="small.txt")["Body"].read() == b"hello"

        part1 = os.urandom(5 * 1024 * 1024)  # S3's minimum for non-final parts
        part2 = os.urandom(1234)
        upload = client.create_multipart_upload(Bucket=bucket, Key="big.bin")
        parts = []
        for number, data in enumerate((part1, part2), start=1):
            resp = client.upload_part(
                Bucket=bucket,
                Key="big.bin",
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=data,
            )
            parts.append({"ETag": resp["ETag"], "PartNumber": number})
        client.complete_multipart_upload(
            Bucket=bucket,
            Key="big.bin",
            UploadId=upload["UploadId"],
            MultipartUpload={"Parts": parts},
        )
        assert client.head_object(Bucket=bucket, Key="big.bin")["ContentLength"] == len(
            part1
        ) + len(part2)
        assert client.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == part1 + part2

        url = client.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "small.txt"}
        )
        assert httpx.get(url).content == b"hello"
    assert not s3.running


def test_env_has_endpoint_and_dummy_keys() -> None:
    s3 = S3Server()
    env = s3.env()
    assert env["AWS_ENDPOINT_URL_S3"] == s3.endpoint
    assert env["AWS_ACCESS_KEY_ID"] == s3.access_key == "testing"
    assert (
        "AWS_ENDPOINT_URL_S3" not in os.environ or os.environ["AWS_ENDPOINT_URL_S3"] != s3.endpoint
    )
