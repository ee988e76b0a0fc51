"""The blob store on a local folder and on a real S3-protocol server."""

import uuid
from pathlib import Path

import pytest
from servers import S3Server

from shipway.core.errors import IntegrityError, InvalidInput, NotFound
from shipway.store import BlobStore, open_blob_store
from shipway.store.artifacts import LocalBackend


@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return open_blob_store(str(tmp_path / "artifacts"))
    server: S3Server = request.getfixturevalue("s3")
    bucket = f"b-{uuid.uuid4().hex[:10]}"
    server.create_bucket(bucket)
    return open_blob_store(f"s3://{bucket}/team/artifacts", server.endpoint)


def test_put_get_dedup_and_listing(blobs: BlobStore, tmp_path: Path) -> None:
    a = tmp_path / "a.bin"
    a.write_bytes(b"x" * 3_000_000)
    first = blobs.put_file(a)
    again = blobs.put_bytes(b"x" * 3_000_000)
    assert first == again and first.size == 3_000_000
    other = blobs.put_bytes(b"other")
    assert sorted(blobs.digests()) == sorted([first.digest, other.digest])
    out = blobs.get_file(first.digest, tmp_path / "out" / "a.bin")
    assert out.read_bytes() == a.read_bytes()
    assert blobs.get_bytes(other.digest) == b"other"
    blobs.delete(other.digest)
    assert not blobs.exists(other.digest)
    with pytest.raises(NotFound, match="missing"):
        blobs.get_bytes(other.digest)


def test_only_sha256_digests_address_blobs(blobs: BlobStore) -> None:
    with pytest.raises(InvalidInput, match="SHA-256"):
        blobs.get_bytes("../../etc/passwd")


def test_local_writes_leave_no_partial_files(tmp_path: Path) -> None:
    blobs = open_blob_store(str(tmp_path / "store"))
    for i in range(20):
        blobs.put_bytes(f"blob {i}".encode())
    leftovers = [p for p in (tmp_path / "store").rglob("*") if p.is_file() and p.name.startswith(".tmp")]
    assert leftovers == []
    assert len(list(blobs.digests())) == 20


def test_local_tampering_is_detected(tmp_path: Path) -> None:
    backend = LocalBackend(tmp_path / "store")
    blobs = BlobStore(backend)
    blob = blobs.put_bytes(b"model weights")
    path = tmp_path / "store" / "sha256" / blob.digest[:2] / blob.digest[2:]
    path.write_bytes(b"model weightz")
    with pytest.raises(IntegrityError, match="corrupt or was altered"):
        blobs.get_file(blob.digest, tmp_path / "out")


def test_s3_tampering_is_detected(s3: S3Server, tmp_path: Path) -> None:
    import boto3

    bucket = f"b-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(bucket)
    blobs = open_blob_store(f"s3://{bucket}", s3.endpoint)
    blob = blobs.put_bytes(b"model weights")
    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1")
    client.put_object(Bucket=bucket, Key=f"sha256/{blob.digest[:2]}/{blob.digest[2:]}", Body=b"swapped")
    with pytest.raises(IntegrityError):
        blobs.get_bytes(blob.digest)


def test_unsupported_uris_are_refused() -> None:
    with pytest.raises(InvalidInput, match="not supported"):
        open_blob_store("ftp://host/path")
    with pytest.raises(InvalidInput, match="names no bucket"):
        open_blob_store("s3:///prefix")
