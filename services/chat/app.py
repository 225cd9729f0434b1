"""Builds the chat service's objects from the environment, once, for the server and for manage commands."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc
import redis

from services.chat.cache import Cache, MemoryCache
from services.chat.conversation import ChatService
from services.chat.followups import FollowupScheduler
from services.chat.knowledge import KnowledgeBase
from services.chat.leads import LeadDelivery
from services.chat.remote import ConsentClient, NotifierClient
from services.chat.settings import ChatSettings
from services.runtime.clients import service_channel
from services.runtime.config import ConfigError
from services.runtime.db import Database
from services.runtime.migrate import upgrade_to_head
from services.runtime.redis_client import key_prefix, redis_from_env

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


@dataclass
class ChatApp:
    settings: ChatSettings
    db: Database
    kb: KnowledgeBase
    cache: Cache
    leads: LeadDelivery
    chat: ChatService
    followups: FollowupScheduler

    @classmethod
    def from_env(cls) -> "ChatApp":
        return cls.build(
            ChatSettings.from_env(),
            Database("chat"),
            service_channel("consent"),
            service_channel("notifier"),
            redis_from_env(),
            key_prefix(),
        )

    @classmethod
    def build(
        cls,
        settings: ChatSettings,
        db: Database,
        consent_channel: grpc.Channel,
        notifier_channel: grpc.Channel,
        redis_client: redis.Redis | None = None,
        redis_prefix: str = "",
    ) -> "ChatApp":
        kb = KnowledgeBase.load()
        texts = len(kb.dialogue.get("followups", {}))
        if len(settings.followup_delays_s) > texts:
            raise ConfigError(
                f"FOLLOWUP_DELAYS names {len(settings.followup_delays_s)} follow-ups; dialogue.yaml has texts for {texts}"
            )
        cache = Cache(MemoryCache(settings.cache_max_entries), redis_client, redis_prefix, settings.redis_retry_s)
        consent = ConsentClient(consent_channel, settings.peer_timeout_s)
        notifier = NotifierClient(notifier_channel, settings.peer_timeout_s)
        leads = LeadDelivery(db, kb, consent, notifier, settings.lead_alert_score)
        followups = FollowupScheduler(db, kb, consent, notifier, settings.followup_delays_s, settings.followup_batch)
        return cls(settings, db, kb, cache, leads, ChatService(db, kb, cache, settings, leads), followups)

    def migrate(self) -> None:
        upgrade_to_head(self.db, MIGRATIONS)
