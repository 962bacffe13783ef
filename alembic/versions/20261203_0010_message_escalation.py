"""messages.escalation_id: the pages sent for an escalation

An on-call page is an outbound SMS like any other; linking it to the
escalation it is about lets the escalation page show whether each page was
delivered or failed, so a clinician can see that nobody was reached.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalation_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_messages_escalation_id_escalations",
            "escalations",
            ["escalation_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch_op.create_index("ix_messages_escalation_id", ["escalation_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_escalation_id")
        batch_op.drop_constraint("fk_messages_escalation_id_escalations", type_="foreignkey")
        batch_op.drop_column("escalation_id")
