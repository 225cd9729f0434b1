"""The one place the chat service's objects are built from its Settings: for the server, the manage commands (and
so the CronJobs) and the tests alike."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.chat.cache import Cache, MemoryCache
from services.chat.conversation import ChatService
from services.chat.events import EventBus
from services.chat.followups import FollowupSender
from services.chat.handoff import HandoffDesk, OpeningHours
from services.chat.inbox import Inbox
from services.chat.jobs import Jobs
from services.chat.knowledge import KNOWLEDGE_DIR, KnowledgeBase
from services.chat.leads import LeadDelivery
from services.chat.platform_health import PlatformHealth
from services.chat.remote import ConsentClient, NotifierClient
from services.chat.sales import SalesView, parse_monday_columns
from services.chat.settings import Settings
from services.chat.staff_auth import StaffAuth, StaffAuthConfig
from services.chat.streams import Streams
from services.runtime.clients import channel_to
from services.runtime.config import ConfigError
from services.runtime.db import Database
from services.runtime.diagnostics import Diagnostics
from services.runtime.migrate import upgrade_to_head
from services.runtime.redis_client import redis_from_env

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass
class ChatApp:
    settings: Settings
    db: Database
    kb: KnowledgeBase
    cache: Cache
    leads: LeadDelivery
    chat: ChatService
    followups: FollowupSender
    jobs: Jobs  # started by the server only, and only with SCHEDULER_ENABLED
    diagnostics: Diagnostics
    health: PlatformHealth
    staff: StaffAuth
    events: EventBus  # what changed in conversations and leads, for the streams of every replica
    streams: Streams
    inbox: Inbox  # the sales inbox's conversations, leads and numbers (Inbox service)

    def migrate(self) -> None:
        upgrade_to_head(self.db, MIGRATIONS)

    def close(self) -> None:
        """End the streams, the periodic jobs (if the server started them) and the lead hand-overs under way, then
        release the database."""
        self.streams.drain()
        self.events.close()
        self.jobs.stop()
        self.leads.stop()
        self.db.dispose()


def build(settings: Settings) -> ChatApp:
    kb = KnowledgeBase.load(Path(settings.knowledge_dir or KNOWLEDGE_DIR), settings.knowledge_reload_s)
    texts = len(kb.dialogue.get("followups", {}))
    if len(settings.followup_delays_s) > texts:
        raise ConfigError(
            f"FOLLOWUP_DELAYS names {len(settings.followup_delays_s)} follow-ups; dialogue.yaml has texts for {texts}"
        )
    db = Database("chat", url=settings.database_url, schema=settings.db_schema)
    cache = Cache(
        MemoryCache(settings.cache_max_entries),
        redis_from_env(settings.redis_url),
        settings.redis_key_prefix,
        settings.redis_retry_s,
    )
    consent = ConsentClient(channel_to(settings.consent_addr), settings.peer_timeout_s)
    notifier = NotifierClient(channel_to(settings.notifier_addr), settings.peer_timeout_s)
    sales = SalesView(lambda: kb.served_cities, parse_monday_columns(settings.monday_columns), settings.eur_pln_rate)
    leads = LeadDelivery(db, consent, notifier, sales, settings.lead_alert_score, kb.consent_wording)
    followups = FollowupSender(db, kb, consent, notifier, settings.followup_delays_s, settings.followup_batch)
    events = EventBus(redis_from_env(settings.redis_url), settings.redis_key_prefix, settings.redis_retry_s)
    hours = OpeningHours.parse(settings.handoff_hours, settings.handoff_timezone)
    desk = HandoffDesk(db, hours, settings.stream_heartbeat_s, notifier, settings.public_base_url)
    chat = ChatService(db, kb, cache, settings, leads, desk, events)
    jobs = Jobs(followups, leads, chat.hand_over_idle, cache, settings, db)
    diagnostics = _diagnostics(db, cache, leads, jobs)
    health = PlatformHealth(
        diagnostics.report,
        channel_to(settings.consent_addr),
        channel_to(settings.notifier_addr),
        channel_to(settings.ratelimit_addr),
        timeout_s=min(settings.peer_timeout_s, 1.0),
    )
    staff = StaffAuth(StaffAuthConfig.parse(
        settings.staff_token_key, settings.staff_token_key_file, settings.staff_users, settings.staff_users_file,
        settings.staff_token_issuer, settings.staff_token_audience, settings.staff_token_ttl_min,
        settings.staff_cookie_secure), db)
    streams = Streams(db, chat, events, desk, settings)
    inbox = Inbox(db, leads, sales, events, hours.zone, settings.max_message_chars, settings.eur_pln_rate)
    return ChatApp(settings, db, kb, cache, leads, chat, followups, jobs, diagnostics, health, staff,
                   events=events, streams=streams, inbox=inbox)


def _diagnostics(db: Database, cache: Cache, leads: LeadDelivery, jobs: Jobs) -> Diagnostics:
    """What ChatAdmin.Diagnose (and so the platform's deep health) reports about chat itself."""
    diagnostics = Diagnostics("chat")
    diagnostics.add_dependency("database", db.ping)
    if cache.redis is not None:
        diagnostics.add_dependency("redis", cache.ping_redis)
    diagnostics.add("cache", lambda: (True, f"{cache.backend}; {len(cache.memory)} in-process entries"))
    diagnostics.add("followup-scheduler", jobs.state)

    def pending_leads() -> tuple[bool, str]:
        pending = leads.pending_count()
        return pending == 0, f"{pending} leads waiting for hand-over"

    diagnostics.add("leads:pending", pending_leads)
    return diagnostics
