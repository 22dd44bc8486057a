"""`orrery models list` and `orrery models bench`, and `preparation_progress`: the display
of the first-use preparation of models, for every command that finds models."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.exit_codes import EXIT_BAD_INPUT, EXIT_OK

if TYPE_CHECKING:  # the model layer (gguf, numpy) loads only when a models command runs
    from rich.console import Console
    from rich.progress import Progress, TaskID

    from agents.models.manager import ModelConfig
    from agents.models.progress import PrepareProgress, PrepareStep
    from agents.models.registry import ModelRegistry


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

    with preparation_progress() as progress:
        registry = ModelRegistry.discover(
            data_dir=data, paths=config.paths, default_name=config.default, progress=progress
        )
    for problem in registry.problems:
        print(f"orrery: warning: {problem}", file=sys.stderr)
    return registry


def _list(options: argparse.Namespace, data: Path) -> int:
    from app.settings import load_model_config

    config = load_model_config(data, extra_paths=[Path(p) for p in options.model])
    registry = _registry(data, config)
    found = model_rows(registry, config, verify_checksums=options.verify)
    for problem in found.warnings:
        print(f"orrery: warning: {problem}", file=sys.stderr)
    for error in found.errors:
        print(f"orrery: error: {error}", file=sys.stderr)
    rows = found.rows
    if options.json:
        for row in rows:
            print(json.dumps(row))
        return EXIT_BAD_INPUT if found.errors else EXIT_OK
    _print_models(rows)
    if not rows:
        print("no models found; `make demo` installs the embedded default", file=sys.stderr)
    return EXIT_BAD_INPUT if found.errors else EXIT_OK


@dataclasses.dataclass(frozen=True, slots=True)
class ModelRows:
    """The models a registry knows, one dict each (the `models list --json` shape); the
    models that cannot be planned (`warnings`) and checksum mismatches (`errors`)."""

    rows: list[dict[str, Any]]
    warnings: list[str]
    errors: list[str]


def model_rows(
    registry: ModelRegistry, config: ModelConfig, *, verify_checksums: bool = False
) -> ModelRows:
    """What `orrery models list` and the desktop app's models panel show of each model:
    name, roles, size, quantisation, context, where it would run and why, the GPU memory
    that placement plans, its chat format, and (`verify_checksums`) its pinned hash."""
    from agents.models.errors import ModelError
    from agents.models.manager import ROLES, ModelManager
    from agents.models.registry import verify

    manager = ModelManager(registry, config)
    roles: dict[str, list[str]] = {}
    for role in ROLES:
        with contextlib.suppress(ModelError):
            roles.setdefault(manager.model_for(role).name, []).append(role)
    rows, warnings, errors = [], [], []
    for entry in registry.entries():
        try:
            plan = manager.plan(entry)
        except ModelError as exc:
            warnings.append(str(exc))
            plan = None
        checksum = ""
        if verify_checksums and entry.pinned_sha256:
            try:
                verify(entry)
                checksum = "ok"
            except ModelError as exc:
                checksum = "MISMATCH"
                errors.append(str(exc))
        meta = entry.metadata
        rows.append(
            {
                "name": entry.name,
                "roles": roles.get(entry.name, []),
                "source": entry.source,
                "architecture": meta.architecture,
                "parameters": meta.size_label or f"{meta.parameters / 1e6:.0f}M",
                "quantisation": meta.quantisation,
                "size_mib": round(meta.size_bytes / 2**20, 1),
                "context_length": meta.context_length,
                "runs_on": plan.placement.reason if plan else "unknown",
                "device": plan.placement.device if plan else "unknown",
                "gpu_mib": round(plan.placement.gpu_bytes / 2**20, 1) if plan else 0.0,
                "chat_format": plan.chat_format if plan else "missing",
                "checksum": checksum,
                "path": str(entry.path),
            }
        )
    return ModelRows(rows, warnings, errors)


def _print_models(rows: list[dict[str, Any]]) -> None:
    """A table of the short facts (names never cut), then each model's longer ones."""
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    console = Console(emoji=False)
    table = Table(title="Local models", box=None, pad_edge=False, header_style="bold")
    longest = max((len(row["name"]) for row in rows), default=4)
    table.add_column("name", no_wrap=True, min_width=longest)
    table.add_column("roles", overflow="fold")
    table.add_column("params", justify="right", overflow="fold")
    table.add_column("quant", overflow="fold")
    table.add_column("MiB", justify="right", overflow="fold")
    table.add_column("context", justify="right", overflow="fold")
    table.add_column("chat", overflow="fold")
    for row in rows:
        table.add_row(
            row["name"],
            ", ".join(row["roles"]),
            row["parameters"],
            row["quantisation"],
            f"{row['size_mib']:.1f}",
            str(row["context_length"]),
            row["chat_format"],
        )
    console.print(table)
    console.print()
    for row in rows:
        checksum = f"; checksum {row['checksum']}" if row["checksum"] else ""
        console.print(Text(f"{row['name']}{checksum}", style="bold"))
        details = Table.grid(padding=(0, 1))
        details.add_column(no_wrap=True)
        details.add_column(overflow="fold")
        details.add_row("runs on:", row["runs_on"])
        details.add_row("file:", row["path"])
        console.print(Padding(details, (0, 0, 0, 2)))


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


@contextlib.contextmanager
def preparation_progress(console: Console | None = None) -> Iterator[PrepareProgress]:
    """A `PrepareProgress` that shows the first-use preparation of models while the block
    runs: bars on `console` (default: stderr) when it is a terminal, else one line when a
    step starts and one when it ends. Shows nothing when nothing is prepared. Pass it to
    `ModelRegistry.discover(progress=...)`; it may be called from any thread."""
    from rich.console import Console

    console = console or Console(stderr=True, emoji=False)
    display: _BarDisplay | _LineDisplay
    display = _BarDisplay(console) if console.is_terminal else _LineDisplay(console)
    try:
        yield display.show
    finally:
        display.close()


def _mib(count: int) -> str:
    return f"{count / 2**20:.1f} MiB"


class _LineDisplay:
    """One line per step start and end, for logs and pipes."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()

    def show(self, step: PrepareStep) -> None:
        with self._lock:
            if step.what not in self._started:
                self._started[step.what] = time.monotonic()
                size = f" ({_mib(step.total)})" if step.total is not None else ""
                self._write(f"orrery: preparing models: {step.what}{size} ...")
            if step.finished:
                seconds = time.monotonic() - self._started.pop(step.what)
                outcome = f"failed ({step.error})" if step.error else "done"
                self._write(f"orrery: preparing models: {step.what}: {outcome} in {seconds:.1f}s")

    def _write(self, line: str) -> None:
        print(line, file=self._console.file, flush=True)

    def close(self) -> None:
        pass


class _BarDisplay:
    """A rich progress bar per step, started on the first step (never for none)."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._progress: Progress | None = None
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def show(self, step: PrepareStep) -> None:
        with self._lock:
            progress = self._progress or self._start()
            task = self._tasks.get(step.what)
            if task is None:
                task = progress.add_task(step.what, total=step.total, amount="")
                self._tasks[step.what] = task
            amount = _mib(step.done) + (f" of {_mib(step.total)}" if step.total else "")
            if step.finished:
                description = step.what + (f": failed ({step.error})" if step.error else ": done")
                progress.update(
                    task,
                    description=description,
                    total=step.total or 1,
                    completed=step.total or 1,
                    amount=amount if step.total else "",
                )
                progress.stop_task(task)
            else:
                progress.update(task, completed=step.done, amount=amount if step.total else "")

    def _start(self) -> Progress:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("preparing models: {task.description}"),
            BarColumn(),
            TextColumn("{task.fields[amount]}"),
            TimeElapsedColumn(),
            console=self._console,
        )
        self._progress.start()
        return self._progress

    def close(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
