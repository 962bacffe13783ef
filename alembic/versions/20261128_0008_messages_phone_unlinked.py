"""ix_messages_phone only for texts with no patient (ix_messages_phone_unlinked)

Lookups by number are for unknown senders; a patient's messages are found by
patient_id. The full index was written for every inbound and outbound row and
again when a send was recorded.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNLINKED = sa.text("patient_id IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_phone")
        batch_op.create_index(
            "ix_messages_phone_unlinked",
            ["phone"],
            unique=False,
            sqlite_where=_UNLINKED,
            postgresql_where=_UNLINKED,
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_messages_phone_unlinked", sqlite_where=_UNLINKED, postgresql_where=_UNLINKED
        )
        batch_op.create_index("ix_messages_phone", ["phone"], unique=False)
