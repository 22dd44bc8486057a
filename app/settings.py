"""The configuration file, `<data_dir>/orrery.toml` (optional).

[models]
paths = ["~/models", "/opt/llm/qwen2.5-7b-instruct-q4_k_m.gguf"]
default = "smollm2-135m-instruct"      # for roles not named below
n_ctx = 4096
use_gpu = true
prefix_cache_mb = 256

[models.roles]
planner = "qwen2.5-7b-instruct-q4_k_m"
device = "smollm2-135m-instruct"

[models.chat_formats]                  # for GGUF files without a chat template
"gemma-3-270m-q4_k_m" = "gemma"

[planner]
edit_policy = "on_failure"             # when the planner edits a running plan: on_failure,
                                       # always (after every result) or never
review_deadline_s = 10                 # the longest a review may take; then the run goes
                                       # on by its plan and a late answer is discarded
unattended = true                      # `orrery run "words"` outside a terminal runs the
                                       # plan without asking (false: it needs --yes)
strategy = "steps"                     # steps: structure by code, small decisions by the
                                       # model (agents/planner/decompose.py); whole: one plan
max_repairs = 2                        # new tries after an invalid plan, then a clear refusal
max_stars = 8                          # the most stars one generated plan may have
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.models.manager import ModelConfig

CONFIG_FILE = "orrery.toml"


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and the key."""


class _ModelsSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(default_factory=list)
    default: str | None = None
    roles: dict[str, str] = Field(default_factory=dict)
    chat_formats: dict[str, str] = Field(default_factory=dict)
    n_ctx: int = Field(default=4096, ge=256, le=1_048_576)
    use_gpu: bool = True
    prefix_cache_mb: int = Field(default=256, ge=0)


class PlannerSettings(BaseModel):
    """The `[planner]` section."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    edit_policy: Literal["on_failure", "always", "never"] = "on_failure"
    review_deadline_s: float = Field(default=10.0, allow_inf_nan=False)
    """The longest a review of a running plan may take, in seconds; when it passes the run
    goes on by its plan (`agents.planner.review`)."""
    unattended: bool = True
    """Whether `orrery run "words"` may start a planned run without asking when it is not
    run from a terminal (a script, a pipe); from a terminal it asks unless --yes."""
    strategy: Literal["steps", "whole"] = "steps"
    """steps: code splits the request and the model fills in small decisions
    (`agents.planner.decompose`); whole: the model writes the whole plan."""
    max_repairs: int = Field(default=2, ge=0, le=10)
    max_stars: int = Field(default=8, ge=1, le=32)

    @field_validator("review_deadline_s", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("give a number of seconds, such as 10, not true or false")
        return value

    @field_validator("review_deadline_s")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError(
                f"must be a positive number of seconds (the longest a review of a running "
                f"plan may take before the run goes on by its plan), such as 10, not {value:g}"
            )
        return value


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: _ModelsSection = Field(default_factory=_ModelsSection)
    planner: PlannerSettings = Field(default_factory=PlannerSettings)


def load_planner_settings(data: Path) -> PlannerSettings:
    """The `[planner]` settings of `<data>/orrery.toml` (defaults when there is no file)."""
    return _read(data).planner


def load_model_config(data: Path, *, extra_paths: list[Path] | None = None) -> ModelConfig:
    """The `[models]` settings of `<data>/orrery.toml` (defaults when there is no file)."""
    section = _read(data).models
    paths = tuple(Path(p).expanduser() for p in section.paths) + tuple(extra_paths or [])
    return ModelConfig(
        paths=paths,
        default=section.default,
        roles=dict(section.roles),
        chat_formats=dict(section.chat_formats),
        n_ctx=section.n_ctx,
        use_gpu=section.use_gpu,
        prefix_cache_mb=section.prefix_cache_mb,
    )


def _read(data: Path) -> _ConfigFile:
    path = data / CONFIG_FILE
    parsed = _ConfigFile()
    if path.is_file():
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot be read: {exc}") from exc
        try:
            parsed = _ConfigFile.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{path}: {where}: {message}") from None
    return parsed
