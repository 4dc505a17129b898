"""All service configuration, from `FACTPATCH_*` environment variables (and `.env`).

One class; every default is a named value here.  `REDIS_URL` is read without prefix, as
every Redis client expects; when it is unset `factpatch serve` starts an embedded Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACTPATCH_", env_file=".env", extra="ignore")

    # -- where things live --------------------------------------------------------------
    data_dir: Path = Field(Path("data"), description="versions, converted model, embedded Redis")
    model: str = Field("smollm2-135m-instruct", description="default model or a local HF dir")
    editor: str | None = Field(None, description="editor checkpoint dir; None = shipped default")
    redis_url: str | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "FACTPATCH_REDIS_URL")
    )

    # -- model placement ----------------------------------------------------------------
    device: str = "auto"
    dtype: str = "auto"
    layers: str | None = Field(None, description="edited layers, e.g. '24,25,26'; None = last 6")
    module_template: str | None = None
    module_kind: Literal["linear", "conv1d"] | None = None
    layers_path: str | None = None

    # -- HTTP -----------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
