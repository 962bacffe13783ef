"""Caches belong to an app's objects, not to modules: two apps (or two ``Database``s) in one
process never share parsed flows, parsed protocols or memoised queue items."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import async_sessionmaker

from bot import library
from bot.appkeys import DATABASE
from bot.services import flow_store, protocol_store
from bot.services.library_seed import checksum, seed_library
from bot.web.api import serialize
from bot.web.api.escalations import ESCALATION_ITEMS
from db.parsed_cache import parsed_definitions
from db.session import Database
from tests.web.harness import harness

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
PHQ9 = ("phq9", 1, checksum(library.flow_sources()["phq9"]))


async def test_a_flow_parsed_through_one_app_is_not_in_the_others_cache(db_url: str) -> None:
    async with harness(db_url) as one, harness(db_url) as other:
        first, second = one.app[DATABASE], other.app[DATABASE]
        assert first is not second
        token = await one.token()
        resp = await one.client.get(
            "/api/v1/fhir/Questionnaire/phq9", headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 200, await resp.text()
        assert PHQ9 in first.parsed.flows
        assert PHQ9 not in second.parsed.flows
        async with second.read() as session:
            assert flow_store.cached(*PHQ9, session=session) is None
            theirs = await flow_store.pinned(session=session, key="phq9", version=1)
        assert theirs is not first.parsed.flows.get(PHQ9)
        assert second.parsed.flows.get(PHQ9) is theirs


async def test_two_databases_keep_their_own_parsed_definitions(db_url: str) -> None:
    first, second = Database(db_url), Database(db_url)
    try:
        async with first.write() as session:
            await seed_library(session=session, now=NOW)
        async with first.read() as session:
            assert parsed_definitions(session) is first.parsed
            _version, flow, digest = await flow_store.latest_published_with_checksum(
                session=session, key="phq9"
            )
            assert (await flow_store.pinned(session=session, key="phq9", version=1)) is flow
            await protocol_store.latest_published(session=session, key="ketamine_induction")
        assert ("phq9", 1, digest) == PHQ9
        assert len(first.parsed.flows) == 1 and len(first.parsed.protocols) == 1
        assert len(second.parsed.flows) == 0 and len(second.parsed.protocols) == 0
    finally:
        await first.dispose()
        await second.dispose()


async def test_a_session_made_elsewhere_parses_on_every_call(database: Database) -> None:
    """Without a ``Database``'s caches in ``session.info`` nothing is cached anywhere."""
    async with database.write() as session:
        await seed_library(session=session, now=NOW)
    bare = async_sessionmaker(database.read_engine)
    async with bare() as session:
        assert parsed_definitions(session) is None
        _v, once = await flow_store.latest_published(session=session, key="phq9")
        _v, twice = await flow_store.latest_published(session=session, key="phq9")
        assert once == twice and once is not twice
        assert flow_store.cached(*PHQ9, session=session) is None
        await protocol_store.pinned(session=session, key="ketamine_induction", version=1)
    assert len(database.parsed.flows) == 0 and len(database.parsed.protocols) == 0


async def test_each_app_memoises_its_own_queue_items(db_url: str) -> None:
    row = (1, 2, 3, "high", "r", "<s>", "open", NOW, NOW, None, None, None, None, None, "", "", 0)
    async with harness(db_url) as one, harness(db_url) as other:
        mine, theirs = one.app[ESCALATION_ITEMS], other.app[ESCALATION_ITEMS]
        assert mine is not theirs
        text = serialize.escalation_rows_json([row], items=mine)
        assert text == serialize.escalation_rows_json([row])
        assert mine.item_json.cache_info().currsize == 1
        assert theirs.item_json.cache_info().currsize == 0
