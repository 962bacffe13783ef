"""checkins.flow_checksum: the pinned flow version's checksum

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 01:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("checkins", schema=None) as batch_op:
        batch_op.add_column(sa.Column("flow_checksum", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE checkins SET flow_checksum = (SELECT checksum FROM flow_versions "
        "WHERE flow_versions.key = checkins.flow_key "
        "AND flow_versions.version = checkins.flow_version) "
        "WHERE flow_version IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("checkins", schema=None) as batch_op:
        batch_op.drop_column("flow_checksum")
