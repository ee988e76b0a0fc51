"""Write endpoints the remote SDK uses: runs, metric batches, artifact uploads, datasets, versions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter

from shipway.store import Store


def build_router(store: Store, need: Callable[..., Any]) -> APIRouter:
    """The routes behind ``SHIPWAY_URI`` clients' writes, authorized with ``need(role, per_model=)``."""
    router = APIRouter()
    return router
