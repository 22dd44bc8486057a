"""The `agents.models` package exports what it lists."""

from __future__ import annotations

import subprocess
import sys

import agents.models


def test_exports_exist() -> None:
    missing = [name for name in agents.models.__all__ if not hasattr(agents.models, name)]
    assert missing == []


def test_discovery_and_placement_are_exported() -> None:
    assert {
        "GgufMetadata",
        "MetadataCache",
        "ModelEntry",
        "ModelError",
        "ModelFileCorrupt",
        "ModelFileMissing",
        "ModelNotFound",
        "ModelRegistry",
        "Placement",
        "plan_placement",
        "read_free_vram",
        "read_metadata",
        "verify",
    } <= set(agents.models.__all__)


def test_importing_the_package_does_not_load_llama_cpp() -> None:
    probe = "import sys, agents.models; print('llama_cpp' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
