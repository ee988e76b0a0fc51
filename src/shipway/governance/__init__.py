"""Governance: identities and tokens, policies and gates, promotion and approval, the audit chain."""

from __future__ import annotations

from shipway.governance import audit

__all__ = ["audit"]
