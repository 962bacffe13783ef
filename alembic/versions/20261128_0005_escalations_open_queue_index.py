"""partial index for the open queue (open and claimed escalations in queue order)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("status IN ('open', 'claimed')")


def upgrade() -> None:
    with op.batch_alter_table("escalations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_escalations_open_queue",
            ["severity_rank", "created_at", "id"],
            unique=False,
            sqlite_where=_OPEN,
            postgresql_where=_OPEN,
        )


def downgrade() -> None:
    with op.batch_alter_table("escalations", schema=None) as batch_op:
        batch_op.drop_index("ix_escalations_open_queue", sqlite_where=_OPEN, postgresql_where=_OPEN)
