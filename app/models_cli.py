"""`orrery models list` and `orrery models bench`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.exit_codes import EXIT_BAD_INPUT, EXIT_OK

if TYPE_CHECKING:  # the model layer (gguf, numpy) loads only when a models command runs
    from agents.models.manager import ModelConfig, ModelManager
    from agents.models.registry import ModelEntry, ModelRegistry


def add_models_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = commands.add_parser(
        "models",
        help="list and benchmark local models",
        description="Local GGUF models: the embedded default, DATA_DIR/models/*.gguf, and the "
        "paths in DATA_DIR/orrery.toml ([models] paths = [...]).",
    )
    sub = models.add_subparsers(dest="models_command", required=True)
    listing = sub.add_parser("list", help="name, size, quantisation, where it would run")
    listing.add_argument("--json", action="store_true", help="one JSON object per model")
    listing.add_argument("--verify", action="store_true", help="check embedded checksums")
    listing.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="PATH",
        help="also consider this GGUF file (repeatable)",
    )
    bench = sub.add_parser("bench", help="load a model and time a short generation")
    bench.add_argument("model", nargs="?", help="a model name or a GGUF path (default: planner)")
    bench.add_argument("--tokens", type=int, default=64, metavar="N", help="tokens to generate")


def models_command(options: argparse.Namespace, data: Path) -> int:
    from agents.models.errors import ModelError
    from app.settings import ConfigError

    try:
        if options.models_command == "list":
            return _list(options, data)
        return asyncio.run(_bench(options, data))
    except (ConfigError, ModelError) as exc:
        print(f"orrery: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _registry(data: Path, config: ModelConfig) -> ModelRegistry:
    from agents.models.registry import ModelRegistry

    registry = ModelRegistry.discover(
        data_dir=data, paths=config.paths, default_name=config.default
    )
    for problem in registry.problems:
        print(f"orrery: warning: {problem}", file=sys.stderr)
    return registry


def _list(options: argparse.Namespace, data: Path) -> int:
    from agents.models.errors import ModelError
    from agents.models.manager import ROLES, ModelManager
    from agents.models.registry import verify
    from app.settings import load_model_config

    config = load_model_config(data, extra_paths=[Path(p) for p in options.model])
    registry = _registry(data, config)
    manager = ModelManager(registry, config)
    roles: dict[str, list[str]] = {}
    for role in ROLES:
        with contextlib.suppress(ModelError):
            roles.setdefault(manager.model_for(role).name, []).append(role)
    status = EXIT_OK
    rows = []
    for entry in registry.entries():
        plan = manager.plan(entry) if _plannable(manager, entry) else None
        checksum = ""
        if options.verify and entry.pinned_sha256:
            try:
                verify(entry)
                checksum = "ok"
            except ModelError as exc:
                checksum = "MISMATCH"
                status = EXIT_BAD_INPUT
                print(f"orrery: error: {exc}", file=sys.stderr)
        meta = entry.metadata
        rows.append(
            {
                "name": entry.name,
                "roles": roles.get(entry.name, []),
                "source": entry.source,
                "architecture": meta.architecture,
                "parameters": meta.size_label or f"{meta.parameters / 1e6:.0f}M",
                "quantisation": meta.quantisation,
                "size_mb": round(meta.size_bytes / 2**20, 1),
                "context_length": meta.context_length,
                "runs_on": plan.placement.reason if plan else "unknown",
                "chat_format": plan.chat_format if plan else "missing",
                "checksum": checksum,
                "path": str(entry.path),
            }
        )
    if options.json:
        for row in rows:
            print(json.dumps(row))
        return status
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Local models")
    for column in ("name", "roles", "params", "quant", "MB", "context", "runs on", "chat"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["name"]) + (f" ({row['checksum']})" if row["checksum"] else ""),
            ",".join(row["roles"]),  # type: ignore[arg-type]
            str(row["parameters"]),
            str(row["quantisation"]),
            str(row["size_mb"]),
            str(row["context_length"]),
            str(row["runs_on"]),
            str(row["chat_format"]),
        )
    Console().print(table)
    if not rows:
        print("no models found; `make demo` installs the embedded default", file=sys.stderr)
    return status


def _plannable(manager: ModelManager, entry: ModelEntry) -> bool:
    from agents.models.errors import ModelError

    try:
        manager.plan(entry)
    except ModelError as exc:
        print(f"orrery: warning: {exc}", file=sys.stderr)
        return False
    return True


async def _bench(options: argparse.Namespace, data: Path) -> int:
    from agents.models.manager import ModelConfig, ModelManager
    from app.settings import load_model_config

    if options.tokens < 1:
        print("orrery: error: --tokens must be at least 1", file=sys.stderr)
        return EXIT_BAD_INPUT
    chosen = options.model
    extra = [Path(chosen)] if chosen and chosen.endswith(".gguf") else []
    config = load_model_config(data, extra_paths=extra)
    registry = _registry(data, config)
    if chosen and extra:
        name = next((e.name for e in registry.entries() if e.path == Path(chosen)), None)
        if name is None:
            from agents.models.errors import ModelFileMissing

            raise ModelFileMissing(Path(chosen))
        chosen = name
    if chosen:
        config = ModelConfig(**{**config.__dict__, "roles": {"planner": chosen}})
    manager = ModelManager(registry, config)
    try:
        backend = await manager.backend("planner")
        chat = [{"role": "user", "content": "Describe a lighthouse in a few sentences."}]
        completion = await backend.chat(chat, max_tokens=options.tokens)
    finally:
        await manager.close()
    prompt_rate = completion.prompt_tokens_evaluated / max(completion.prompt_seconds, 1e-9)
    print(
        f"model={backend.name} load_s={backend.load_seconds:.2f} "
        f"prompt_tokens={completion.prompt_tokens_evaluated} prompt_tok_s={prompt_rate:.0f} "
        f"generated={completion.completion_tokens} gen_tok_s={completion.tokens_per_second:.1f}"
    )
    return EXIT_OK
