import base64
import pickle
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

import shipway
from shipway.registry import get_version, parse_model_uri, sign_version, verify_version
from shipway.registry.integrity import generate_keypair, scan_pickles
from shipway.store import Store, schema


@pytest.fixture
def registered(store: Store, sk_model, churn_data):  # type: ignore[no-untyped-def]
    frame, _ = churn_data
    v = shipway.register_model(sk_model, name="churn", input_example=frame.head(50))
    shipway.set_alias("churn", "staging", v.version)
    return v


def _blob(home: Path, digest: str) -> Path:
    return home / "artifacts" / "sha256" / digest[:2] / digest[2:]


def test_load_by_alias_and_number_predicts_exactly(registered, sk_model, churn_data) -> None:
    frame, _ = churn_data
    for uri in ("models:/churn@staging", "models:/churn/1", "models:/churn", "models:/churn/latest"):
        predictor = shipway.load_model(uri)
        np.testing.assert_array_equal(predictor.predict(frame), sk_model.predict(frame))
    assert predictor.version.version == 1


def test_predict_casts_safe_types_and_accepts_records(registered, sk_model, churn_data) -> None:
    frame, _ = churn_data
    predictor = shipway.load_model("models:/churn@staging")
    as_float = frame.astype({"tenure": "float64"})
    np.testing.assert_array_equal(predictor.predict(as_float), sk_model.predict(frame))
    records = frame.head(3).to_dict("records")
    np.testing.assert_array_equal(predictor.predict(records), sk_model.predict(frame.head(3)))


def test_predict_lists_every_problem_by_column(registered, churn_data) -> None:
    frame, _ = churn_data
    bad = frame.drop(columns=["charges"]).assign(tenure="long", plan="gold", extra=1)
    predictor = shipway.load_model("models:/churn/1")
    with pytest.raises(shipway.InvalidInput) as info:
        predictor.predict(bad)
    problems = {(p["column"], p["problem"].split(" ")[0]) for p in info.value.details}
    assert ("charges", "is") in problems
    assert ("extra", "is") in problems
    assert any(p["column"] == "tenure" and "non-numeric" in p["problem"] for p in info.value.details)
    assert any(p["column"] == "plan" and "unknown categories" in p["problem"] for p in info.value.details)
    for column in ("charges", "extra", "tenure", "plan"):
        assert f"'{column}'" in info.value.message


def test_fractional_values_for_an_integer_column_are_refused(registered, churn_data) -> None:
    frame, _ = churn_data
    with pytest.raises(shipway.InvalidInput, match="'tenure' has fractional values"):
        shipway.load_model("models:/churn/1").predict(frame.assign(tenure=frame["tenure"] + 0.5))


def test_a_tampered_artifact_byte_is_refused_naming_the_file(registered, shipway_home: Path) -> None:
    [(name, entry)] = list(registered.manifest.items())
    blob = _blob(shipway_home, entry["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    with pytest.raises(shipway.IntegrityError, match=name):
        shipway.load_model("models:/churn@staging")
    report = verify_version(registered)
    assert report.files == {name: "mismatch"} and not report.ok


def test_a_tampered_manifest_is_refused(registered, store: Store, sk_model) -> None:
    evil = shipway.register_model(sk_model, name="evil", description="other bytes")
    m = schema.model_versions
    forged = {k: dict(v, digest="0" * 64) for k, v in registered.manifest.items()}
    with store.write() as conn:
        conn.execute(m.update().where(m.c.id == registered.id).values(manifest=forged))
    with pytest.raises(shipway.IntegrityError, match=r"manifest .* was altered"):
        shipway.load_model("models:/churn/1")
    assert not verify_version(get_version("churn", 1)).manifest_ok
    assert evil.version == 1


def test_signing_and_verifying_detects_any_change(registered, store: Store, tmp_path: Path) -> None:
    private, public = generate_keypair(tmp_path / "keys")
    assert oct(private.stat().st_mode & 0o777) == "0o600"
    signed = sign_version("churn", 1, private)
    assert signed.signed and len(signed.signing_key or "") == 16
    assert verify_version(signed, public).signature_ok is True
    shipway.load_model("models:/churn/1", public_key=public)

    _other_private, other_public = generate_keypair(tmp_path / "other")
    assert verify_version(signed, other_public).signature_ok is False
    # Rewrite the manifest digest and the schema together: the stored digest can be forged,
    # the signature cannot.
    m = schema.model_versions
    schema_forged = dict(signed.schema or {}, inputs=[])
    forged = get_version("churn", 1)
    from shipway.registry import integrity

    payload = integrity.signed_payload(
        "churn", 1, forged.flavor, forged.format, forged.manifest, schema_forged, forged.flavor_meta
    )
    with store.write() as conn:
        conn.execute(
            m.update()
            .where(m.c.id == signed.id)
            .values(schema=schema_forged, manifest_digest=integrity.manifest_digest(payload))
        )
    assert verify_version(get_version("churn", 1), public).signature_ok is False
    with pytest.raises(shipway.IntegrityError, match="signature"):
        shipway.load_model("models:/churn/1", public_key=public)
    assert base64.b64decode(signed.signature or "")


class Exploit:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        import os

        return (os.system, ("echo pwned",))


def test_pickle_scanner_names_the_offending_global(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(Exploit()))
    (tmp_path / "safe.pkl").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    (tmp_path / "arrays.pkl").write_bytes(pickle.dumps(np.arange(3)))
    findings = scan_pickles(tmp_path)
    assert [(f.file, f.global_name) for f in findings] == [("model.pkl", "posix.system")]


def test_loading_a_version_with_a_malicious_pickle_is_refused(
    registered, store: Store, shipway_home: Path
) -> None:
    # Swap in a pickle payload and forge the manifest so only the scanner stands in the way.
    payload = pickle.dumps(Exploit())
    blob = store.blobs.put_bytes(payload)
    v = registered
    [(name, _)] = list(v.manifest.items())
    manifest = {name: {"digest": blob.digest, "size": blob.size}}
    from shipway.registry import integrity

    digest = integrity.manifest_digest(
        integrity.signed_payload(v.name, v.version, v.flavor, v.format, manifest, v.schema, v.flavor_meta)
    )
    m = schema.model_versions
    with store.write() as conn:
        conn.execute(m.update().where(m.c.id == v.id).values(manifest=manifest, manifest_digest=digest))
    with pytest.raises(shipway.PermissionDenied, match=r"posix\.system"):
        shipway.load_model("models:/churn/1")
    assert sa is not None


@pytest.mark.parametrize("uri", ["churn", "models:/", "models:/churn@Prod", "models:/churn/x", "s3://x"])
def test_bad_model_uris_are_refused(uri: str) -> None:
    with pytest.raises(shipway.InvalidInput, match="not a model URI"):
        parse_model_uri(uri)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torchscript_loads_without_trust_through_the_scanner(store: Store) -> None:
    torch = pytest.importorskip("torch")
    import pandas as pd

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    frame = pd.DataFrame(np.random.default_rng(0).normal(size=(10, 3)), columns=["a", "b", "c"]).astype(
        "float32"
    )
    shipway.register_model(torch.jit.script(net), name="net")
    loaded = shipway.load_model("models:/net/1")
    with torch.no_grad():
        expected = net(torch.tensor(frame.to_numpy())).numpy()
    np.testing.assert_array_equal(loaded.predict(frame), expected)


def test_the_signature_covers_the_flavor_meta_loaders_act_on(
    registered, store: Store, tmp_path: Path
) -> None:
    from shipway.registry import integrity

    private, public = generate_keypair(tmp_path / "keys")
    signed = sign_version("churn", 1, private)
    meta = dict(signed.flavor_meta, estimator_class="evil.Thing")
    digest = integrity.manifest_digest(
        integrity.signed_payload(
            "churn", 1, signed.flavor, signed.format, signed.manifest, signed.schema, meta
        )
    )
    m = schema.model_versions
    with store.write() as conn:
        conn.execute(m.update().where(m.c.id == signed.id).values(flavor_meta=meta, manifest_digest=digest))
    assert verify_version(get_version("churn", 1), public).signature_ok is False


@pytest.mark.parametrize("evil", ["/tmp/shipway-escape.sh", "../../escape.sh", "a/../../../escape.sh"])
def test_manifest_paths_cannot_escape_the_load_folder(registered, store: Store, evil: str) -> None:
    from shipway.registry import integrity

    v = registered
    [(name, entry)] = list(v.manifest.items())
    manifest = {name: entry, evil: entry}
    digest = integrity.manifest_digest(
        integrity.signed_payload(v.name, v.version, v.flavor, v.format, manifest, v.schema, v.flavor_meta)
    )
    m = schema.model_versions
    with store.write() as conn:
        conn.execute(m.update().where(m.c.id == v.id).values(manifest=manifest, manifest_digest=digest))
    with pytest.raises(shipway.IntegrityError, match="escapes"):
        shipway.load_model("models:/churn/1")
    assert not Path("/tmp/shipway-escape.sh").exists()


def test_a_signature_from_a_numpy_example_accepts_numpy_input(store: Store) -> None:
    from sklearn.linear_model import LogisticRegression

    X = np.random.default_rng(0).normal(size=(60, 3))
    model = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    shipway.register_model(model, name="np-model", input_example=X[:5])
    loaded = shipway.load_model("models:/np-model/1")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    import pandas as pd

    dupes = pd.DataFrame([[1.0, 2.0, 3.0]], columns=["0", "0", "2"])
    with pytest.raises(shipway.InvalidInput, match="duplicate columns"):
        loaded.predict(dupes)


def test_integers_too_large_for_int64_are_refused(registered, churn_data) -> None:
    frame, _ = churn_data
    with pytest.raises(shipway.InvalidInput, match="too large"):
        shipway.load_model("models:/churn/1").predict(frame.head(2).assign(tenure=[1e19, 1.0]))


@pytest.mark.parametrize("name", ["team/churn", "churn ", "a b", ""])
def test_model_names_must_fit_in_a_uri(store: Store, sk_model, name: str) -> None:
    with pytest.raises(shipway.InvalidInput, match="Model name"):
        shipway.register_model(sk_model, name=name)


def test_the_scanner_finds_pickles_however_they_are_wrapped(tmp_path: Path) -> None:
    import io
    import zipfile

    (tmp_path / "proto0.dat").write_bytes(pickle.dumps(Exploit(), protocol=0))
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("payload.bin", pickle.dumps(Exploit()))
    (tmp_path / "prefixed.zip").write_bytes(b"junk in front" + inner.getvalue())
    nested = inner.getvalue()
    for level in range(4):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(f"level{level}.zip", nested)
        nested = buf.getvalue()
    (tmp_path / "deep.zip").write_bytes(nested)
    arr = io.BytesIO()
    np.save(arr, np.array([Exploit()], dtype=object), allow_pickle=True)
    (tmp_path / "objects.npy").write_bytes(arr.getvalue())
    plain = io.BytesIO()
    np.save(plain, np.arange(10.0))
    (tmp_path / "numbers.npy").write_bytes(plain.getvalue())
    found = {f.file.split("!")[0]: f.global_name for f in scan_pickles(tmp_path)}
    assert found["proto0.dat"] == "posix.system"
    assert found["prefixed.zip"] == "posix.system"
    assert found["deep.zip"].startswith("<zip archives nested deeper")
    assert found["objects.npy"] == "posix.system"
    assert "numbers.npy" not in found


def test_predict_proba_is_validated_like_predict(registered, sk_model, churn_data) -> None:
    frame, _ = churn_data
    loaded = shipway.load_model("models:/churn/1")
    np.testing.assert_array_equal(loaded.predict_proba(frame), sk_model.predict_proba(frame))
    with pytest.raises(shipway.InvalidInput, match="'charges' is missing"):
        loaded.predict_proba(frame.drop(columns=["charges"]))


def test_the_sqlite_read_finds_exactly_what_get_version_finds(sk_model, churn_data, tmp_path: Path) -> None:
    from shipway.core.config import Settings
    from shipway.registry import archive_version, update_version
    from shipway.registry.loading import read_sqlite_version

    frame, _ = churn_data
    private, _public = generate_keypair(tmp_path / "keys")
    card = {"intended_use": "Rank customers for retention calls."}
    shipway.register_model(
        sk_model, name="churn", input_example=frame.head(5), tags={"team": "risk"}, card=card
    )
    shipway.register_model(sk_model, name="churn")  # no input example: no signature schema
    shipway.register_model(sk_model, name="churn", signing_key=private)
    shipway.register_model(sk_model, name="other")
    for alias, number in (("staging", 1), ("champion", 1), ("canary", 3)):
        shipway.set_alias("churn", alias, number)
    update_version("churn", 2, description="superseded")
    archive_version("churn", 2)
    cases = [("churn", number, None) for number in (1, 2, 3, 4, None)]
    cases += [("churn", None, alias) for alias in ("staging", "champion", "canary", "absent")]
    cases += [
        ("other", None, None),
        ("missing", None, None),
        ("missing", 1, None),
        ("missing", None, "staging"),
    ]

    with Store(Settings.resolve(), connect=False).sqlite_reader() as conn:
        assert conn is not None
        for name, number, alias in cases:
            try:
                expected = get_version(name, number, alias=alias)
            except shipway.NotFound:
                expected = None
            assert read_sqlite_version(conn, name, number, alias) == expected, (name, number, alias)


def _register_for_a_cold_load(sk_model, churn_data) -> str:  # type: ignore[no-untyped-def]
    frame, _ = churn_data
    shipway.register_model(sk_model, name="churn", input_example=frame.head(5))
    shipway.set_alias("churn", "staging", 1)
    rows = frame.head(3).to_dict("records")
    return (
        "import json, sys, shipway\n"
        "m = shipway.load_model('models:/churn@staging')\n"
        f"print(json.dumps(m.predict({rows!r}).tolist()))\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )


def _cold_load(code: str) -> tuple[list[int], set[str]]:
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    prediction, modules = out.stdout.splitlines()
    return json.loads(prediction), set(modules.split())


def test_a_load_in_a_new_process_opens_no_engine(sk_model, churn_data) -> None:
    # The SQLite store's version row comes from sqlite3: no engine, no schema check, and no
    # SQLAlchemy dialect imported (the SQLite one loads when an engine is made).
    prediction, modules = _cold_load(_register_for_a_cold_load(sk_model, churn_data))
    assert prediction == sk_model.predict(churn_data[0].head(3)).tolist()
    assert not {"sqlalchemy.dialects.sqlite", "sqlalchemy.dialects.postgresql", "alembic"} & modules


@pytest.mark.xfail(
    strict=True,
    reason="`import shipway` imports shipway.tracking, and shipway.registry imports registry.versions, "
    "which import SQLAlchemy at module level (~0.3 s of a cold load); remove this mark when they do not",
)
def test_a_load_in_a_new_process_imports_no_sqlalchemy(sk_model, churn_data) -> None:
    _prediction, modules = _cold_load(_register_for_a_cold_load(sk_model, churn_data))
    assert "sqlalchemy" not in modules


def test_a_load_from_a_store_at_another_schema_revision_is_refused(registered, store: Store) -> None:
    from shipway.store import reset_default_store

    with store.write() as conn:  # an older revision this Shipway knows
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0001'"))
    reset_default_store()
    with pytest.raises(shipway.Conflict, match="shipway db upgrade"):
        shipway.load_model("models:/churn@staging")
    with store.write() as conn:  # one it does not: a newer Shipway upgraded the store
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    reset_default_store()
    with pytest.raises(shipway.Conflict, match="a newer Shipway upgraded it"):
        shipway.load_model("models:/churn@staging")
