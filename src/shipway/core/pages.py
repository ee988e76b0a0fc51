"""Opaque page tokens for keyset pagination.

A token holds the sort key of the last item a page returned, so the next page starts strictly after
it: items added or removed meanwhile never shift a page, and no item is returned twice. The key is
base64url-encoded JSON; callers treat it as opaque and pass ``next_page_token`` back unchanged.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence

from shipway.core.errors import InvalidInput

__all__ = ["decode_cursor", "encode_cursor"]

# Keys are a few ids, names and millisecond times; anything much longer was not issued by Shipway.
_MAX_TOKEN_CHARS = 2048
_INT64 = 2**63 - 1

Key = tuple[str | int, ...]


def encode_cursor(key: Sequence[str | int]) -> str:
    """The page token for a page that ended at the item whose sort key is ``key``."""
    raw = json.dumps(list(key), separators=(",", ":"), ensure_ascii=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, shape: Sequence[type]) -> Key:
    """The sort key in ``token``, checked against ``shape`` (``(int, str)`` etc.); else InvalidInput."""
    try:
        if len(token) > _MAX_TOKEN_CHARS:
            raise ValueError
        padded = token + "=" * (-len(token) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
        if not isinstance(key, list) or len(key) != len(shape):
            raise ValueError
        for value, kind in zip(key, shape, strict=True):
            if type(value) is not kind:
                raise ValueError
            if kind is int and not -_INT64 <= value <= _INT64:
                raise ValueError
            if kind is str:
                value.encode()  # a lone surrogate raises UnicodeEncodeError
                if "\x00" in value:
                    raise ValueError
        return tuple(key)
    except (ValueError, UnicodeError, binascii.Error):
        shown = token if len(token) <= 80 else token[:80] + "…"
        raise InvalidInput(
            f"Page token {shown!r} is not one Shipway issued; pass the next_page_token of the "
            "previous page, or leave it out for the first page."
        ) from None
