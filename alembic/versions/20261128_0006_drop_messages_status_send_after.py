"""drop ix_messages_status_send_after (the outbox's partial index serves its queries)

Every query on messages by status goes through ``ix_messages_outbox`` (the outbox's
claims, its backlog metric) or through the patient (a STOP's cancellation), so this
index was only written: three index entries per reply on the hot path (the inbound
row, the reply row, and the reply row again when its send is recorded).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 11:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_status_send_after")


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(
            "ix_messages_status_send_after", ["status", "send_after"], unique=False
        )
