"""patients.last_name and patients.date_of_birth

A first name alone cannot tell two patients apart on a queue or a phone call;
the clinic's record number (``external_ref``) was already there.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("last_name", sa.String(length=80), nullable=False, server_default="")
        )
        batch_op.add_column(sa.Column("date_of_birth", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("patients", schema=None) as batch_op:
        batch_op.drop_column("date_of_birth")
        batch_op.drop_column("last_name")
