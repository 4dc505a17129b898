"""All service configuration, from `FACTPATCH_*` environment variables (and `.env`).

One class; every default is a named value here.  `REDIS_URL` is read without prefix, as
every Redis client expects; when it is unset `factpatch serve` starts an embedded Redis.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Keys that must never protect a service: a hash of any of these is refused at start-up.
PLACEHOLDER_SECRETS = (
    "",
    "changeme",
    "change-me",
    "secret",
    "password",
    "admin",
    "test",
    "key",
    "apikey",
    "api-key",
    "xxx",
    "12345678",
)
Scope = Literal["generate", "edit", "admin"]
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


def hash_key(key: str) -> str:
    """The form an API key is configured in: sha256 hex of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKey(BaseModel):
    """One configured key: its sha256, a name for logs, and its scopes.

    Scopes: `generate` (POST /generate), `edit` (POST/DELETE /edits), `admin` (rollback;
    implies the others).  Read-only GETs need any valid key.
    """

    name: str = Field(min_length=1, max_length=64)
    sha256: str
    scopes: list[Scope] = Field(default_factory=lambda: list[Scope](["generate"]))

    @field_validator("sha256")
    @classmethod
    def _real_hash(cls, v: str) -> str:
        v = v.lower()
        if not _SHA256_HEX.match(v):
            raise ValueError("sha256 must be 64 hex characters (`factpatch hash-key`)")
        if v in {hash_key(p) for p in PLACEHOLDER_SECRETS}:
            raise ValueError("this API key is a placeholder secret; generate a real one")
        return v


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACTPATCH_", env_file=".env", extra="ignore")

    # -- where things live --------------------------------------------------------------
    data_dir: Path = Field(
        default=Path("data"), description="versions, converted model, embedded Redis"
    )
    model: str = Field(
        default="smollm2-135m-instruct", description="default model or a local HF dir"
    )
    editor: str | None = Field(
        default=None, description="editor checkpoint dir; None = shipped default"
    )
    editor_config: dict[str, Any] = Field(
        default_factory=dict,
        description="EditorConfig fields (random init) or checkpoint overrides, as JSON",
    )

    @field_validator("editor_config")
    @classmethod
    def _editor_settings(cls, v: dict[str, Any]) -> dict[str, Any]:
        """Checked at start-up (names, choices, value_opt's fields), not at the first edit."""
        from editor_core.editor import EditorConfig, config_fields

        EditorConfig(**config_fields(v))  # ValueError names what is wrong
        return v

    protect: Path | None = Field(
        default=None,
        description="JSONL of prompts no edit may change ({'prompt', 'answer'?} a line), "
        "added at start-up to the protected list (`/protected`) where missing",
    )
    protect_check: bool = Field(
        default=True, description="after each version, score the protected prompts"
    )
    max_protected: int = Field(
        default=10_000,
        ge=1,
        description="prompts the protected list may hold (each solve scores them all)",
    )

    @field_validator("protect", mode="before")
    @classmethod
    def _unset_when_empty(cls, v: Any) -> Any:
        """FACTPATCH_PROTECT= (empty, as compose passes an unset variable) means none."""
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("protect")
    @classmethod
    def _protected_prompts(cls, v: Path | None) -> Path | None:
        """Read at start-up: a missing file or a bad line stops the server with its name."""
        if v is not None:
            from editor_core.data import read_locality

            if not v.is_file():
                raise ValueError(f"protected prompts file {v} does not exist")
            if not read_locality(v):
                raise ValueError(f"protected prompts file {v} holds no prompt")
        return v

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("REDIS_URL", "FACTPATCH_REDIS_URL")
    )
    redis_prefix: str = Field(default="factpatch:", description="prefix of every Redis key")
    redis_timeout_s: float = Field(default=2.0, gt=0, description="Redis socket/connect timeout")

    # -- model placement ----------------------------------------------------------------
    device: str = "auto"
    dtype: str = "auto"
    layers: str | None = Field(
        default=None, description="edited layers, e.g. '24,25,26'; None = last 6"
    )
    module_template: str | None = None
    module_kind: Literal["linear", "conv1d"] | None = None
    layers_path: str | None = None

    # -- editing ------------------------------------------------------------------------
    edit_mode: Literal["joint", "sequential"] = "joint"
    worker_max_batch: int = Field(
        default=256, ge=1, description="most edits coalesced into one solve"
    )
    worker_linger_ms: int = Field(default=200, ge=0, description="wait this long for more jobs")
    worker_claim_idle_ms: int = Field(
        default=60_000, ge=100, description="reclaim a dead consumer's jobs after this idle time"
    )
    worker_block_ms: int = Field(default=1_000, ge=10, description="XREADGROUP block time")
    verify_extra_tokens: int = Field(
        default=2, ge=0, description="tokens generated past the target"
    )
    worker_lease_ms: int = Field(
        default=10_000, ge=100, description="one active worker: lease TTL, renewed at a third"
    )
    queue_max_length: int = Field(default=1_000, ge=1, description="queued jobs before 429")
    idempotency_ttl_s: int = Field(default=86_400, ge=1)
    fault_inject: Literal["", "after_write", "after_commit"] = Field(
        default="", description="testing only: the worker SIGKILLs itself at this point"
    )

    # -- request bounds -----------------------------------------------------------------
    max_edits_per_request: int = Field(default=256, ge=1)
    max_prompt_chars: int = Field(default=1_000, ge=1)
    max_target_chars: int = Field(default=200, ge=1)
    max_edit_tokens: int = Field(default=128, ge=2, description="prompt + target tokens per edit")
    max_generate_prompt_tokens: int = Field(default=1_024, ge=1)
    max_new_tokens_cap: int = Field(default=256, ge=1)
    default_max_new_tokens: int = Field(default=32, ge=1)
    max_stop_sequences: int = Field(default=4, ge=0)
    max_body_bytes: int = Field(default=1_048_576, ge=1_024)

    # -- engine -------------------------------------------------------------------------
    engine_version_cache: int = Field(default=4, ge=1, description="versions kept in memory")
    engine_poll_s: float = Field(default=1.0, gt=0, description="fallback check of `current`")

    # -- security -----------------------------------------------------------------------
    api_keys: list[ApiKey] = Field(default_factory=list, description="JSON list; none = open")
    rate_limit_per_minute: int = Field(default=600, ge=0, description="per client; 0 = off")

    # -- HTTP -----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    retry_after_s: int = Field(default=2, ge=1, description="Retry-After on 429/503")

    @model_validator(mode="after")
    def _gate_needs_joint_mode(self) -> Settings:
        """A gated change (editor_core/gate.py) is solved from the base weights and lives
        beside them; sequential mode would stack changes on a parent's weights."""
        if "scope_gate" in self.editor_config:
            gate, where = self.editor_config["scope_gate"], "editor_config"
        else:  # the checkpoint's own setting; a damaged checkpoint is reported when loaded
            gate, where = None, f"editor {self.editor}"
            try:
                config = json.loads((Path(self.editor or "") / "config.json").read_text())
                gate = config["editor"].get("scope_gate")
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass
        if gate is not None and self.edit_mode != "joint":
            raise ValueError(f"{where}: scope_gate {gate} needs edit_mode 'joint'")
        return self

    @property
    def layer_tuple(self) -> tuple[int, ...] | None:
        if not self.layers:
            return None
        return tuple(int(x) for x in self.layers.split(",") if x.strip())

    @property
    def versions_dir(self) -> Path:
        return self.data_dir / "versions"

    @property
    def edits_dir(self) -> Path:
        return self.data_dir / "edits"
