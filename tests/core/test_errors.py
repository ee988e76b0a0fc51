import pytest

import shipway
from shipway.core import errors


def test_every_error_is_a_shipway_error_with_a_stable_code_status_and_exit_code() -> None:
    classes = [getattr(errors, name) for name in errors.__all__]
    assert all(issubclass(c, shipway.ShipwayError) for c in classes)
    codes = {c.code for c in classes}
    assert len(codes) == len(classes), "each class has its own code"
    assert all(400 <= c.http_status < 600 for c in classes)


def test_envelope_shape() -> None:
    err = shipway.NotFound("No run with id 'x'.", details={"id": "x"})
    assert err.to_dict() == {
        "error": {"code": "not_found", "message": "No run with id 'x'.", "details": {"id": "x"}}
    }


def test_missing_dependency_names_the_extra() -> None:
    err = errors.MissingDependency.for_extra("s3", "boto3", "An S3 artifact store")
    assert 'pip install "shipway[s3]"' in str(err)


def test_callers_catch_families_by_type() -> None:
    with pytest.raises(shipway.ShipwayError):
        raise shipway.InvalidInput("bad")
