"""Account lifecycle: API tokens expire; an admin's unlock replaces the stored lock

Sign-in throttling is now counted from the attempts per client address and per
email from that address, so the per-user counter and lock columns go; an
admin's unlock forgives the failures before ``users.unlocked_at``. Every API
token has an expiry; tokens that exist at upgrade get 90 days from then.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 15:00:00
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

import db.types
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_GRACE = timedelta(days=90)


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("failed_logins")
        batch_op.drop_column("locked_until")
        batch_op.add_column(
            sa.Column("unlocked_at", db.types.UTCDateTime(timezone=True), nullable=True)
        )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expires_at", db.types.UTCDateTime(timezone=True), nullable=True)
        )
    tokens = sa.table("api_tokens", sa.column("expires_at", db.types.UTCDateTime(timezone=True)))
    op.get_bind().execute(tokens.update().values(expires_at=datetime.now(UTC) + _GRACE))
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.alter_column(
            "expires_at", existing_type=db.types.UTCDateTime(timezone=True), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_column("expires_at")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("unlocked_at")
        batch_op.add_column(
            sa.Column("locked_until", db.types.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
        )
