"""The audit event's fields are declared once (vault.audit.Event); everything else agrees with it."""

from __future__ import annotations

from typing import Any

from vault.api._audit import EventView
from vault.audit import CONTENT_FIELDS, Event
from vault.store import AUDIT_TEXT_LIMITS, AuditEvent, AuditRecord
from vault.store._audit import AuditFilter

CHAIN = {"seq", "hash"}
COLUMNS: Any = AuditEvent.__table__.columns


def test_the_table_holds_the_content_the_row_id_the_mac_and_the_chain() -> None:
    assert {c.name for c in COLUMNS} == {*CONTENT_FIELDS, "id", "mac", *CHAIN}
    assert set(Event.__dataclass_fields__) == {c.name for c in COLUMNS}


def test_the_record_the_vault_appends_is_the_content_and_its_mac() -> None:
    assert set(AuditRecord.__dataclass_fields__) == {*CONTENT_FIELDS, "mac"}


def test_the_auditor_view_shows_the_content_and_the_chain_but_not_the_mac() -> None:
    assert set(EventView.model_fields) == {*CONTENT_FIELDS, "id", *CHAIN, "at"}


def test_every_filter_names_a_content_field() -> None:
    ranges = {"since_us": "at_us", "until_us": "at_us", "subject": "subjects"}  # a range, a member
    for name in AuditFilter.__dataclass_fields__:
        assert ranges.get(name, name) in CONTENT_FIELDS, name


def test_bounded_text_columns_are_content_fields() -> None:
    assert set(AUDIT_TEXT_LIMITS) <= set(CONTENT_FIELDS)
