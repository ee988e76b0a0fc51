"""Users, roles and tokens: shape, storage, expiry, revocation, ceilings and model scopes."""

import re

import pytest
import sqlalchemy as sa

import shipway
from shipway import governance
from shipway.core.actor import acting_as
from shipway.governance import audit, identity
from shipway.store import Store, schema


def test_tokens_have_a_prefix_256_random_bits_and_a_checksum_and_only_their_hash_is_stored(
    store: Store,
) -> None:
    governance.add_principal("ci-bot", "contributor", kind="service", store=store)
    info, secret = governance.create_token("ci-bot", description="CI", store=store)
    assert re.fullmatch(r"sws_[0-9A-Za-z]{43}_[0-9A-Za-z]{6}", secret)
    assert identity.looks_like_token(secret)
    typo = secret[:10] + ("A" if secret[10] != "A" else "B") + secret[11:]
    assert not identity.looks_like_token(typo)
    with store.read() as conn:
        stored = conn.execute(sa.select(schema.tokens)).one()
    assert secret not in str(tuple(stored)) and stored.hash == identity.token_hash(secret)
    assert info.hint.startswith("sws_") and info.hint != secret
    actor = identity.authenticate(secret, store=store)
    assert (actor.name, actor.kind, actor.role) == ("ci-bot", "service", "contributor")
    issued = audit.entries(action="token.issued", store=store)[0]
    assert secret not in str(issued.payload)


def test_bad_unknown_revoked_expired_and_disabled_tokens_are_refused_with_reasons(store: Store) -> None:
    governance.add_principal("dana", "approver", store=store)
    with pytest.raises(shipway.Unauthenticated, match="malformed"):
        identity.authenticate("Bearer nonsense", store=store)
    with pytest.raises(shipway.Unauthenticated, match="not known"):
        identity.authenticate(identity.new_token_secret(), store=store)
    info, secret = governance.create_token("dana", store=store)
    governance.revoke_token(info.id, store=store)
    with pytest.raises(shipway.Unauthenticated, match="revoked"):
        identity.authenticate(secret, store=store)
    info, secret = governance.create_token("dana", expires_in_ms=1, store=store)
    import time

    time.sleep(0.01)
    with pytest.raises(shipway.Unauthenticated, match="expired"):
        identity.authenticate(secret, store=store)
    _, secret = governance.create_token("dana", store=store)
    governance.disable_principal("dana", store=store)
    with pytest.raises(shipway.Unauthenticated, match="disabled"):
        identity.authenticate(secret, store=store)


def test_last_used_time_is_recorded(store: Store) -> None:
    governance.add_principal("erin", "viewer", store=store)
    info, secret = governance.create_token("erin", store=store)
    assert info.last_used_at is None
    identity.authenticate(secret, store=store)
    assert governance.list_tokens("erin", store=store)[0].last_used_at is not None


def test_a_token_ceiling_and_model_scope_limit_what_its_holder_may_do(store: Store) -> None:
    governance.add_principal("frank", "approver", store=store)
    governance.grant("frank", "admin", model="fraud", store=store)
    _, secret = governance.create_token("frank", role="contributor", models=["churn"], store=store)
    actor = identity.authenticate(secret, store=store)
    assert actor.can("contributor", "churn") and not actor.can("approver", "churn")
    assert not actor.can("viewer", "fraud")  # outside the token's models
    _, full = governance.create_token("frank", store=store)
    everything = identity.authenticate(full, store=store)
    assert everything.can("admin", "fraud") and not everything.can("admin", "churn")


def test_only_admins_manage_people_and_nobody_creates_a_token_above_their_role(store: Store) -> None:
    governance.add_principal("gina", "contributor", store=store)
    _, secret = governance.create_token("gina", store=store)
    gina = identity.authenticate(secret, store=store)
    with acting_as(gina):
        with pytest.raises(shipway.PermissionDenied, match="holds role contributor; this needs admin"):
            governance.add_principal("mallory", "admin", store=store)
        with pytest.raises(shipway.PermissionDenied, match="cannot create a admin token"):
            governance.create_token(role="admin", store=store)
        with pytest.raises(shipway.PermissionDenied):
            governance.create_token("someone-else", store=store)
        info, own = governance.create_token(role="viewer", store=store)
        assert identity.authenticate(own, store=store).role_for() == "viewer"
        assert [t.id for t in governance.list_tokens(store=store)][-1] == info.id


def test_the_local_os_user_becomes_an_admin_principal_when_it_first_takes_a_token(store: Store) -> None:
    info, secret = governance.create_token(role="contributor", store=store)
    actor = identity.authenticate(secret, store=store)
    assert actor.name == identity.os_user() and actor.role == "admin" and actor.role_for() == "contributor"
    assert info.principal == identity.os_user()


def test_shipway_token_selects_the_identity_in_embedded_mode(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    governance.add_principal("hank", "approver", store=store)
    _, secret = governance.create_token("hank", store=store)
    monkeypatch.setenv("SHIPWAY_TOKEN", secret)
    assert governance.whoami()["name"] == "hank"
    with shipway.start_run(experiment="as-hank") as run:
        pass
    assert shipway.get_run(run.id).user == "hank"
    assert audit.entries(action="run.created")[0].actor == "hank"


def test_durations_and_roles_are_checked() -> None:
    assert identity.parse_duration_ms("30d") == 30 * 86_400_000
    with pytest.raises(shipway.InvalidInput, match="not a duration"):
        identity.parse_duration_ms("thirty days")
    with pytest.raises(shipway.InvalidInput, match="Unknown role 'owner'"):
        identity.check_role("owner")


def test_the_servers_token_cache_forgets_revoked_tokens_and_changed_roles(store: Store) -> None:
    governance.add_principal("ivy", "viewer", store=store)
    info, secret = governance.create_token("ivy", store=store)
    assert identity.authenticate_cached(secret, store=store).role == "viewer"
    governance.grant("ivy", "approver", store=store)
    assert identity.authenticate_cached(secret, store=store).role == "approver"
    governance.revoke_token(info.id, store=store)
    with pytest.raises(shipway.Unauthenticated, match="revoked"):
        identity.authenticate_cached(secret, store=store)
