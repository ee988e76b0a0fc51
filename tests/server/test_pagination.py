"""Keyset pagination of every list endpoint over real HTTP: walk the pages, get each item once.

The server is uvicorn on a loopback port, serving the test's store (SQLite or PostgreSQL).
"""

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from servers import free_port
from sklearn.dummy import DummyClassifier

import shipway
from shipway import governance
from shipway.core.actor import acting_as
from shipway.governance import identity
from shipway.server import create_app
from shipway.store import Store

N = 7  # items of each kind; pages of 3 leave a short last page


@pytest.fixture
def client(store: Store) -> Iterator[httpx.Client]:
    """An admin's client of a server holding N experiments, models, versions, tokens, principals, requests."""
    model = DummyClassifier().fit([[0], [1]], [0, 1])
    for i in range(N):
        with shipway.start_run(experiment=f"exp-{i}"):
            pass
        shipway.register_model(model, name=f"model-{i}")
        shipway.register_model(model, name="churn")
        governance.add_principal(f"user-{i}", store=store)
    governance.add_principal("ada", "admin", store=store)
    _, secret = governance.create_token("ada", store=store)
    ada = identity.authenticate(secret, store=store)
    with acting_as(ada):
        for i in range(N - 1):
            governance.create_token(description=f"token {i}", store=store)
        for version in range(1, N + 1):
            governance.promote("churn", version, "staging", store=store)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as http:
        yield http
    server.should_exit = True
    thread.join(timeout=10)


def walk(client: httpx.Client, path: str, key: str, limit: int = 3) -> list[list[dict[str, Any]]]:
    """Every page of ``path``, following next_page_token to the end."""
    pages, token = [], None
    while True:
        params = {"limit": limit, **({"page_token": token} if token else {})}
        response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body[key])
        token = body["next_page_token"]
        if token is None:
            return pages
        assert len(pages) < 50, "the pages never end"


LISTS = [
    ("/api/v1/experiments", "experiments", "name", [f"exp-{i}" for i in reversed(range(N))]),
    ("/api/v1/models", "models", "name", ["churn", *(f"model-{i}" for i in range(N))]),
    ("/api/v1/models/churn/versions", "versions", "version", list(range(N, 0, -1))),
    ("/api/v1/principals", "principals", "name", sorted(["ada", *(f"user-{i}" for i in range(N))])),
    ("/api/v1/requests", "requests", "version", list(range(N, 0, -1))),
]


def test_pages_hold_every_item_once_in_order(client: httpx.Client) -> None:
    for path, key, field, expected in LISTS:
        pages = walk(client, path, key)
        sizes = [len(page) for page in pages]
        assert sizes[:-1] == [3] * (len(pages) - 1) and 1 <= sizes[-1] <= 3, (path, sizes)
        assert [item[field] for page in pages for item in page] == expected, path
        everything = client.get(path, params={"limit": 1000}).json()
        assert everything["next_page_token"] is None and len(everything[key]) == len(expected), path


def test_token_pages_hold_every_token_once(client: httpx.Client) -> None:
    pages = walk(client, "/api/v1/tokens", "tokens", limit=2)
    ids = [t["id"] for page in pages for t in page]
    assert len(ids) == N and len(set(ids)) == N
    assert all(t["principal"] == "ada" for page in pages for t in page)


def test_a_page_token_is_a_position_not_an_offset(client: httpx.Client) -> None:
    first = client.get("/api/v1/models", params={"limit": 3}).json()
    assert [m["name"] for m in first["models"]] == ["churn", "model-0", "model-1"]
    # A model that sorts before the cursor arrives between pages: nothing repeats or goes missing.
    shipway.register_model(DummyClassifier().fit([[0], [1]], [0, 1]), name="aardvark")
    second = client.get("/api/v1/models", params={"limit": 3, "page_token": first["next_page_token"]}).json()
    assert [m["name"] for m in second["models"]] == ["model-2", "model-3", "model-4"]


def test_requests_page_by_model_and_status(client: httpx.Client) -> None:
    pages = walk(client, "/api/v1/requests?model=churn&status=completed", "requests", limit=4)
    assert [len(page) for page in pages] == [4, 3]
    assert all(r["model"] == "churn" and r["status"] == "completed" for page in pages for r in page)


def test_forged_page_tokens_and_bad_limits_are_refused_cleanly(client: httpx.Client) -> None:
    for token in ["nonsense", "W10", "WyJhIiwxXQ", "x" * 3000]:
        for path in ("/api/v1/models", "/api/v1/requests", "/api/v1/tokens", "/api/v1/experiments"):
            response = client.get(path, params={"page_token": token})
            assert response.status_code == 400, (path, token, response.text)
            assert response.json()["error"]["code"] == "invalid_input"
    for limit in (0, 1001):
        response = client.get("/api/v1/principals", params={"limit": limit})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_input"
