"""Local models: finding GGUF files, reading their metadata, and placing their layers on a GPU."""

from agents.models.errors import ModelError, ModelFileCorrupt, ModelFileMissing, ModelNotFound
from agents.models.metadata import GgufMetadata, MetadataCache, file_sha256, read_metadata
from agents.models.placement import ALL_LAYERS, ModelSizes, Placement, plan_placement
from agents.models.progress import PrepareProgress, PrepareStep
from agents.models.registry import (
    DEFAULT_MODEL,
    EMBEDDED,
    EmbeddedModel,
    ModelEntry,
    ModelRegistry,
    ModelSource,
    verify,
)
from agents.models.vram import read_free_vram

__all__ = [
    "ALL_LAYERS",
    "DEFAULT_MODEL",
    "EMBEDDED",
    "EmbeddedModel",
    "GgufMetadata",
    "MetadataCache",
    "ModelEntry",
    "ModelError",
    "ModelFileCorrupt",
    "ModelFileMissing",
    "ModelNotFound",
    "ModelRegistry",
    "ModelSizes",
    "ModelSource",
    "Placement",
    "PrepareProgress",
    "PrepareStep",
    "file_sha256",
    "plan_placement",
    "read_free_vram",
    "read_metadata",
    "verify",
]
