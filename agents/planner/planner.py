"""The planner: a request becomes a constellation; a running plan gets edits or a verdict.

Both calls generate under a schema (`agents.planner.schema`) that makes the output
well-formed by construction, validate what the grammar cannot promise
(`agents.planner.validate`), and on a problem ask again with the problem stated, at most
`max_repairs` times. Then they return a usable result or raise `PlanRejected`; nothing
is ever half-applied, because edits are returned as one `EditBatch` for the orchestrator
to apply atomically, and checked against a copy first.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from agents.constellation import (
    AddStar,
    Constellation,
    ConstellationError,
    EditBatch,
    PlanSpec,
    RemoveLine,
    RemoveStar,
    apply_batch,
)
from agents.constellation.edits import Edit
from agents.models.backend import Completion
from agents.models.grammar import schema_to_grammar
from agents.planner.context import PlanningContext
from agents.planner.errors import NoCapableDevice, PlanRejected
from agents.planner.prompt import ChatMessage, edit_messages, plan_messages, repair_messages
from agents.planner.schema import MAX_NEW_STARS, MAX_STARS, edit_schema, plan_schema
from agents.planner.validate import InvalidOutput, parse_json, plan_from_output, star_spec

log = logging.getLogger("orrery.planner")

MAX_REPAIRS = 2
PLAN_TOKENS = 1536
EDIT_TOKENS = 1024
NAME_CHARS = 80

T = TypeVar("T")


class ChatBackend(Protocol):
    """What the planner needs of a model: `LlamaBackend` or a scripted stand-in."""

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int = ...,
        temperature: float = ...,
        schema: dict[str, Any] | None = ...,
        grammar: str | None = ...,
    ) -> Completion: ...


@dataclass(frozen=True)
class PlanOutcome:
    """A valid plan, how many generations it took, and what the rejected ones got wrong."""

    spec: PlanSpec
    constellation: Constellation
    attempts: int
    seconds: float
    problems: list[str] = field(default_factory=list)

    @property
    def rationale(self) -> str:
        return self.spec.rationale


Action = Literal["continue", "finish", "fail", "edit"]


@dataclass(frozen=True)
class EditDecision:
    """The planner's verdict on a running plan: `continue` (no change), `finish` (the
    request is met: `batch` removes the stars that have not started, if any), `fail` (it
    cannot be met) or `edit` (`batch` adds and removes stars)."""

    action: Action
    rationale: str
    batch: EditBatch | None
    attempts: int
    seconds: float
    problems: list[str] = field(default_factory=list)


class Planner:
    """Creates and edits plans with one model; see the module docstring."""

    def __init__(
        self,
        backend: ChatBackend,
        *,
        max_repairs: int = MAX_REPAIRS,
        max_stars: int = MAX_STARS,
        examples: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        if max_repairs < 0 or max_stars < 1:
            raise ValueError("max_repairs must be >= 0 and max_stars >= 1")
        self.backend = backend
        self.max_repairs = max_repairs
        self.max_stars = max_stars
        self.examples = examples

    async def create(
        self,
        request: str,
        context: PlanningContext,
        *,
        name: str | None = None,
        examples: Sequence[Mapping[str, Any]] | None = None,
        avoid: Sequence[Mapping[str, Any]] = (),
    ) -> PlanOutcome:
        """A validated plan for `request`, or `PlanRejected` with each attempt's problem.

        `examples` (`request`, `plan`) replace the planner's own for this call (remembered
        plans, `agents.planner.recall`); `avoid` are plans that failed before for similar
        requests (`request`, `plan`, `problem`)."""
        request = request.strip()
        if not request:
            raise PlanRejected("plan", ["the request is empty; say what should be done"])
        if not context.tools:
            raise NoCapableDevice(context.device_names)
        name = name or plan_name(request)
        started = time.perf_counter()
        (spec, constellation), attempt, problems = await self._until_valid(
            "plan",
            plan_messages(request, context, self.examples if examples is None else examples, avoid),
            lambda size: plan_schema(context, max_stars=size),
            self.max_stars,
            PLAN_TOKENS,
            lambda data: plan_from_output(data, context, name=name),
        )
        seconds = time.perf_counter() - started
        log.info(
            "plan %s: %d stars after %d attempt(s) in %.1fs",
            constellation.id,
            len(spec.stars),
            attempt,
            seconds,
        )
        return PlanOutcome(spec, constellation, attempt, seconds, problems)

    async def edit(
        self,
        request: str,
        constellation: Constellation,
        context: PlanningContext,
        *,
        reasons: Sequence[str],
    ) -> EditDecision:
        """Continue, finish, fail, or an edit batch that applies cleanly to `constellation`.

        The batch is tried on `constellation` (which is not changed) before it is returned.
        """
        prefix = f"v{constellation.version + 1}s"
        removable = [s.id for s in constellation.stars.values() if not s.status.started]
        started = time.perf_counter()
        (action, rationale, batch), attempt, problems = await self._until_valid(
            "edit",
            edit_messages(request, constellation, context, reasons=reasons, new_prefix=prefix),
            lambda size: edit_schema(
                context,
                existing=list(constellation.stars),
                removable=removable,
                id_prefix=prefix,
                max_new=size,
            ),
            MAX_NEW_STARS,
            EDIT_TOKENS,
            lambda data: _decision(data, constellation, context, removable),
            log_id=f"c={constellation.id} ",
        )
        seconds = time.perf_counter() - started
        return EditDecision(action, rationale, batch, attempt, seconds, problems)

    async def _until_valid(
        self,
        what: str,
        base: list[ChatMessage],
        schema_for: Callable[[int], dict[str, Any]],
        size: int,
        max_tokens: int,
        convert: Callable[[dict[str, Any]], T],
        *,
        log_id: str = "",
    ) -> tuple[T, int, list[str]]:
        """Generate and `convert` until an output converts, at most `max_repairs` times
        more: (the result, the attempt it took, the earlier attempts' problems). Each
        retry shows the rejected output and its problem; a cut-off output halves `size`
        (the most stars the schema allows). `PlanRejected` when every attempt failed."""
        messages = base
        problems: list[str] = []
        for attempt in range(1, self.max_repairs + 2):
            completion = await self._generate(
                messages, schema_for(size), max_tokens, last=attempt == self.max_repairs + 1
            )
            try:
                data = parse_json(completion.text, finish_reason=completion.finish_reason)
                return convert(data), attempt, problems
            except InvalidOutput as problem:
                log.info("%s%s attempt %d rejected: %s", log_id, what, attempt, problem)
                problems.append(str(problem))
                if completion.finish_reason == "length":
                    size = max(1, size // 2)
                messages = repair_messages(
                    base, completion.text, str(problem), last=attempt == self.max_repairs
                )
        raise PlanRejected(what, problems)

    async def _generate(
        self,
        messages: Sequence[ChatMessage],
        schema: dict[str, Any],
        max_tokens: int,
        *,
        last: bool,
    ) -> Completion:
        """One generation under `schema`. The last attempt also rules out `$` in strings:
        references are the one structure a grammar over plain strings cannot check, so
        the final try is valid by construction, if less capable."""
        if last and self.max_repairs > 0:
            return await self.backend.chat(
                messages,
                max_tokens=max_tokens,
                temperature=0.0,
                grammar=schema_to_grammar(schema, exclude="$"),
            )
        return await self.backend.chat(
            messages, max_tokens=max_tokens, temperature=0.0, schema=schema
        )


def _decision(
    data: Mapping[str, Any],
    constellation: Constellation,
    context: PlanningContext,
    removable: Sequence[str],
) -> tuple[Action, str, EditBatch | None]:
    decided = data.get("decision")
    if not isinstance(decided, Mapping):
        raise InvalidOutput("the answer needs an object 'decision' with an 'action'")
    action = decided.get("action")
    rationale = str(decided.get("rationale") or "").strip()
    if not re.search(r"[^\W\d_]", rationale):  # "}," is no reason
        rationale = "(the model gave no reason)"
    if action in ("continue", "fail"):
        return action, rationale, None
    if action == "finish":
        # The request is met: what has not started is not needed any more.
        batch = _removal(constellation, removable, rationale) if removable else None
        return "finish", rationale, batch
    if action != "edit":
        raise InvalidOutput(f"'action' must be continue, finish, fail or edit, not {action!r}")
    added = decided.get("add") or []
    removed = decided.get("remove") or []
    if not isinstance(added, list) or not isinstance(removed, list):
        raise InvalidOutput("'add' and 'remove' must be lists")
    for star_id in removed:
        if star_id not in removable:
            raise InvalidOutput(
                f"star {star_id!r} cannot be removed: only stars that have not started can "
                f"({', '.join(removable) or 'none now'})"
            )
    edits: list[Edit] = list(_removal(constellation, removed, rationale).edits) if removed else []
    existing = list(constellation.stars)
    for raw in added:
        spec = star_spec(raw, context, earlier=existing)
        edits.append(AddStar(star=spec))
        existing.append(spec.id)
    if not edits:
        return "continue", rationale, None
    batch = EditBatch(edits=edits, rationale=rationale)
    try:
        apply_batch(constellation, batch, known_tools=context.tools)
    except ConstellationError as exc:
        raise InvalidOutput(str(exc)) from None
    return "edit", rationale, batch


def _removal(constellation: Constellation, star_ids: Sequence[str], rationale: str) -> EditBatch:
    """Remove these stars and every line that touches them, as one batch."""
    doomed = set(star_ids)
    edits: list[Edit] = [
        RemoveLine(source=line.source, target=line.target)
        for line in constellation.lines
        if line.source in doomed or line.target in doomed
    ]
    edits += [RemoveStar(id=star_id) for star_id in dict.fromkeys(star_ids)]
    return EditBatch(edits=edits, rationale=rationale)


def plan_name(request: str) -> str:
    """A constellation's name for a request: its first words, at most 80 characters."""
    first = " ".join(request.split())
    return first if len(first) <= NAME_CHARS else first[: NAME_CHARS - 1] + "…"
