"""Settings, read from the environment or a `.env` file (names are part of the contract).

Every provider has the same group of settings, e.g. for EachLabs:
`KLINGBOT_EACHLABS_API_KEY`, `KLINGBOT_EACHLABS_BASE_URL`, `KLINGBOT_EACHLABS_WEBHOOK_SECRET`,
`KLINGBOT_EACHLABS_PRICE_PER_SECOND`, `KLINGBOT_EACHLABS_MAX_CONCURRENT`,
`KLINGBOT_EACHLABS_CREATES_PER_MIN`. Defaults are the vendor's documented values. Kling's
official API has no API key: `KLINGBOT_KLING_ACCESS_KEY` and `KLINGBOT_KLING_SECRET_KEY` sign a JWT.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.errors import ConfigError
from bot.shards import MAX_SHARD_COUNT, check_shard_ids, parse_shard_ids

ProviderName = Literal[
    "local", "pixeldojo", "aihubmax", "eachlabs", "novita", "segmind", "fal", "replicate", "kling"
]
PROVIDER_NAMES: tuple[ProviderName, ...] = (
    "local",
    "pixeldojo",
    "aihubmax",
    "eachlabs",
    "novita",
    "segmind",
    "fal",
    "replicate",
    "kling",
)
ENV_PREFIX = "KLINGBOT_"


class ProviderSettings(BaseModel):
    """Settings every provider has."""

    api_key: SecretStr | None = None
    base_url: str = ""
    webhook_secret: SecretStr | None = None
    price_per_second: int | None = Field(default=None, ge=0)
    max_concurrent: int = Field(default=5, ge=1, le=1000)
    creates_per_min: int = Field(default=60, ge=1, le=100_000)
    polls_per_min: int = Field(default=300, ge=1, le=1_000_000)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def missing_keys(self) -> list[str]:
        """The names of the credential fields that are not set."""
        key = self.api_key
        return [] if key is not None and key.get_secret_value().strip() else ["api_key"]


class LocalSettings(ProviderSettings):
    max_concurrent: int = Field(default=2, ge=1, le=64)
    creates_per_min: int = Field(default=600, ge=1)
    render_s: float = Field(default=3.0, ge=0, le=600)  # minimum simulated job time
    create_s: float = Field(default=0.0, ge=0, le=60)  # how long a create takes to answer


class PixelDojoSettings(ProviderSettings):
    base_url: str = "https://pixeldojo.ai/api/v1"
    creates_per_min: int = Field(default=10, ge=1)  # third-party reports of 10 requests/min


class AIHubMaxSettings(ProviderSettings):
    base_url: str = "https://api.aihubmax.com"


class EachLabsSettings(ProviderSettings):
    base_url: str = "https://api.eachlabs.ai/v1"
    max_concurrent: int = Field(default=10, ge=1)  # seed: 10 concurrent per key
    creates_per_min: int = Field(default=100, ge=1)  # seed: 100 creates per minute


class NovitaSettings(ProviderSettings):
    base_url: str = "https://api.novita.ai"


class SegmindSettings(ProviderSettings):
    base_url: str = "https://api.segmind.com"
    api_mode: Literal["auto", "v2", "v1"] = "auto"  # v2 async; v1 synchronous fallback


class FalSettings(ProviderSettings):
    base_url: str = "https://queue.fal.run"
    jwks_url: str = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    max_concurrent: int = Field(default=2, ge=1)  # new accounts; rises to 40 with purchases


class ReplicateSettings(ProviderSettings):
    base_url: str = "https://api.replicate.com/v1"
    max_concurrent: int = Field(default=10, ge=1)
    creates_per_min: int = Field(default=600, ge=1)  # documented create limit


class KlingSettings(ProviderSettings):
    """Kling's official API: a JWT signed with the secret key replaces the API key."""

    base_url: str = "https://api-singapore.klingai.com"  # global; China: api-beijing.klingai.com
    access_key: SecretStr | None = None
    secret_key: SecretStr | None = None
    # Kling publishes no number: the concurrency of the account's resource pack decides, and a
    # task beyond it is refused with 1303 (backed off). 5 fits the smaller packs [?].
    max_concurrent: int = Field(default=5, ge=1)

    def missing_keys(self) -> list[str]:
        return [
            name
            for name in ("access_key", "secret_key")
            if (value := getattr(self, name)) is None or not value.get_secret_value().strip()
        ]


class Settings(BaseSettings):
    """All of klingbot's settings."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        extra="ignore",
    )

    # Discord
    discord_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DISCORD_TOKEN", "KLINGBOT_DISCORD_TOKEN")
    )
    discord_api_base_url: str | None = None
    discord_gateway_url: str | None = None
    dev_guild_id: int | None = None
    owner_ids: Annotated[list[int], NoDecode] = Field(default_factory=list)
    # Sharding (several processes): unset, one unsharded connection. With a count and no ids,
    # this process holds every shard; with ids ("0,1", "0-2"), only those.
    shard_count: int | None = Field(default=None, ge=1, le=MAX_SHARD_COUNT)
    shard_ids: Annotated[tuple[int, ...] | None, NoDecode] = None

    # Provider choice
    provider: ProviderName = "local"
    failover_providers: Annotated[list[ProviderName], NoDecode] = Field(default_factory=list)

    # Storage and web
    db_path: Path = Path("data/klingbot.db")  # SQLite, the default: nothing to install
    # PostgreSQL instead (several processes, several machines): postgresql://user:pass@host/db
    database_url: SecretStr | None = None
    database_max_connections: int = Field(default=10, ge=2, le=1000)  # per process, for writes
    media_dir: Path = Path("data/media")
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    # The web server faces the internet: every connection and request is bounded.
    http_idle_timeout_s: float = Field(default=15.0, gt=0, le=3600)  # idle / slow headers
    http_body_timeout_s: float = Field(default=30.0, gt=0, le=3600)  # whole webhook body (408)
    webhook_max_concurrent: int = Field(default=128, ge=1, le=10_000)  # handlers; more get 503
    metrics_token: SecretStr | None = None  # Bearer token for /metrics (and /readyz details)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Pricing (credits). Default from PixelDojo's page: 8 credits per second of video.
    price_per_second: int = Field(default=8, ge=0)
    price_audio_multiplier: float = Field(default=1.0, ge=0)
    price_720p_multiplier: float = Field(default=1.0, ge=0)
    price_1080p_multiplier: float = Field(default=1.0, ge=0)
    price_4k_multiplier: float = Field(default=2.0, ge=0)

    # Job pipeline limits and timeouts
    job_deadline_s: int = Field(default=3600, ge=10)
    late_result_grace_s: int = Field(default=6 * 3600, ge=0)
    poll_initial_interval_s: float = Field(default=5.0, gt=0)
    poll_max_interval_s: float = Field(default=60.0, gt=0)
    poll_concurrency: int = Field(default=16, ge=1, le=1000)
    http_timeout_s: float = Field(default=30.0, gt=0)
    download_timeout_s: float = Field(default=600.0, gt=0)
    # one post of a clip to Discord; the job's lease is extended to cover it (bot.pipeline.leases)
    upload_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    download_max_mb: int = Field(default=500, ge=1)
    webhook_max_body_kb: int = Field(default=1024, ge=1)
    webhook_tolerance_s: int = Field(default=300, ge=1)
    delivery_max_attempts: int = Field(default=5, ge=1)
    default_upload_limit_mb: int = Field(default=10, ge=1)
    transcode_concurrency: int = Field(default=1, ge=1, le=16)  # re-encodes running at once
    media_retention_s: int = Field(default=7 * 24 * 3600, ge=60)
    media_max_total_mb: int = Field(default=10_000, ge=1)
    status_edit_interval_s: float = Field(default=5.0, ge=0)

    # Per-member limits in each guild (a guild's moderators may change them with /pool limits)
    member_max_live_jobs: int = Field(default=2, ge=1, le=100)
    member_max_queued_jobs: int = Field(default=5, ge=0, le=1000)
    member_cooldown_s: int = Field(default=0, ge=0, le=86_400)

    # Several processes sharing one database: each names itself (unset: host:pid:random) and
    # holds the jobs it works on through leases renewed every third of `lease_s`
    process_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[!-~]+$")
    lease_s: float = Field(default=30.0, ge=1.0, le=3600.0)

    # Providers
    local: LocalSettings = LocalSettings()
    pixeldojo: PixelDojoSettings = PixelDojoSettings()
    aihubmax: AIHubMaxSettings = AIHubMaxSettings()
    eachlabs: EachLabsSettings = EachLabsSettings()
    novita: NovitaSettings = NovitaSettings()
    segmind: SegmindSettings = SegmindSettings()
    fal: FalSettings = FalSettings()
    replicate: ReplicateSettings = ReplicateSettings()
    kling: KlingSettings = KlingSettings()

    @field_validator("owner_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.replace(";", ",").split(",") if part.strip()]
        return value

    @field_validator("shard_ids", mode="before")
    @classmethod
    def _parse_shard_ids(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        if "shard_count" not in info.data:  # invalid itself: reported there
            return None
        count = info.data["shard_count"]
        if count is None:
            raise ValueError("needs KLINGBOT_SHARD_COUNT, the total number of shards of the bot")
        if isinstance(value, str):
            return parse_shard_ids(value, count)
        if isinstance(value, list | tuple) and all(type(v) is int for v in value):
            return check_shard_ids(value, count)
        return value  # not ids at all: pydantic says so

    @field_validator("failover_providers", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with https:// (or http:// for local testing)")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "must be a PostgreSQL URL (postgresql://user:password@host:5432/dbname);"
                " leave it unset to use SQLite at KLINGBOT_DB_PATH"
            )
        return SecretStr(url)

    @property
    def database_target(self) -> str:
        """What `Database.open` opens: the PostgreSQL URL when set, else the SQLite file."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return str(self.db_path)

    @property
    def database_options(self) -> dict[str, Any]:
        """Backend options for `Database.open`."""
        if self.database_url is None:
            return {}
        return {"write_connections": self.database_max_connections}

    def provider_settings(self, name: str) -> ProviderSettings:
        """The settings group of one provider."""
        if name not in PROVIDER_NAMES:
            raise ConfigError(
                f"Unknown provider {name!r}. Choose one of: {', '.join(PROVIDER_NAMES)}."
            )
        value = getattr(self, name)
        assert isinstance(value, ProviderSettings)
        return value

    @property
    def provider_chain(self) -> list[str]:
        """The configured provider followed by failover providers, without repeats."""
        chain: list[str] = [self.provider]
        chain += [p for p in self.failover_providers if p not in chain]
        return chain

    @property
    def has_discord_token(self) -> bool:
        """Whether DISCORD_TOKEN is set (and not blank)."""
        return self.discord_token is not None and bool(
            self.discord_token.get_secret_value().strip()
        )

    def missing_for_run(self) -> list[str]:
        """Settings `klingbot run` needs that are not set, each with how to fix it."""
        missing = []
        if not self.has_discord_token:
            missing.append(
                "DISCORD_TOKEN is not set: copy the bot token from the Discord developer portal"
                " (Applications > your app > Bot > Reset Token) into DISCORD_TOKEN."
            )
        missing += self.missing_provider_keys()
        return missing

    def missing_provider_keys(self) -> list[str]:
        """API keys of configured providers that are not set."""
        missing = []
        for name in self.provider_chain:
            if name == "local":
                continue
            for key in self.provider_settings(name).missing_keys():
                what = "API key" if key == "api_key" else key.replace("_", " ")
                missing.append(
                    f"{env_name(name, key)} is not set: KLINGBOT_PROVIDER={self.provider}"
                    f" needs {name}'s {what} (or choose KLINGBOT_PROVIDER=local to run offline)."
                )
        return missing


def env_name(*loc: str | int) -> str:
    """The environment variable behind a settings field location."""
    parts = [str(p) for p in loc]
    if parts == ["discord_token"]:
        return "DISCORD_TOKEN"
    return ENV_PREFIX + "_".join(parts).upper()


def load_settings(**overrides: Any) -> Settings:
    """Read settings; turn validation errors into one message naming each bad setting."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            loc = [p for p in item["loc"] if isinstance(p, str | int)]
            name = env_name(*loc) if loc else "settings"
            given = item.get("input")
            shown = "" if isinstance(given, dict) or given is None else f" (got {given!r})"
            problems.append(f"{name}: {item['msg']}{shown}.")
        raise ConfigError(
            "klingbot cannot start because of its settings:\n  "
            + "\n  ".join(problems)
            + "\nFix these in the environment or in .env (see README, 'Settings')."
        ) from None
