"""index for a patient's check-ins, newest first (the patient page's timeline)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 02:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkins", schema=None) as batch_op:
        batch_op.create_index(
            "ix_checkins_patient_id_due_at", ["patient_id", "due_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("checkins", schema=None) as batch_op:
        batch_op.drop_index("ix_checkins_patient_id_due_at")
