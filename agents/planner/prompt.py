"""The planner's prompts: plan creation, plan editing, and repair after a rejected output.

The system prompt describes the connected devices and their tools and shows worked
examples; it depends only on the context, so llama.cpp's prefix cache reuses it across
calls. The editing prompt shows the request, each star's status and its bounded
`ResultSummary`, never raw device output.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from agents.constellation import Constellation
from agents.constellation.plan_file import PlanLoader
from agents.planner.context import ANY_DEVICE, PlanningContext
from agents.planner.summary import summarise

ChatMessage = dict[str, str]

EXAMPLES_FILE = Path(__file__).resolve().parents[2] / "resources" / "planner" / "examples.yaml"

RULES = (
    "Answer with one JSON plan. Each star is one tool call on one device. Use as few stars "
    "as the request needs, and one star per device when the request names several devices. "
    "Stars that do not depend on each other run in parallel; a star that needs another's "
    'result lists it in "after" and may use its output in args as ${s1.output.stdout} '
    f'(or ${{s1.output}}). "on" names a device that has the tool, or "{ANY_DEVICE}".'
)


def system_prompt(context: PlanningContext) -> str:
    """The devices, their tools and the rules: the same for every request on this fleet."""
    lines = ["You are the planner of Orrery, which runs tasks on several machines.", ""]
    lines.append("Devices:")
    for device in context.devices:
        labels = f"; labels {', '.join(sorted(device.labels))}" if device.labels else ""
        gpu = "; GPU" if device.gpu else ""
        tools = ", ".join(sorted(t for t in device.tools if t in context.tools))
        lines.append(f"- {device.name} ({device.platform}{labels}{gpu}): {tools}")
    lines += ["", "Tools:"]
    for tool in context.tools.values():
        args = ", ".join(tool.required)
        lines.append(f"- {tool.name}({args}): {tool.description}")
    lines += ["", RULES]
    return "\n".join(lines)


def plan_messages(
    request: str,
    context: PlanningContext,
    examples: Sequence[Mapping[str, Any]] | None = None,
    avoid: Sequence[Mapping[str, Any]] = (),
) -> list[ChatMessage]:
    """The creation prompt: plans that failed before for similar requests (`avoid`: each
    `request`, `plan` and `problem`), examples (by default the bundled ones most like the
    request, the most similar last) and the request, after the fleet's system prompt."""
    chosen = select_examples(request, bundled_examples()) if examples is None else examples
    warned = [
        f'A plan that failed before for "{past["request"]}" ({past["problem"]}): '
        f"{json.dumps(past['plan'], separators=(',', ':'))}\nDo not repeat what failed."
        for past in avoid
    ]
    shown = [
        f"Example request: {example['request']}\n"
        f"Example plan: {json.dumps(example['plan'], separators=(',', ':'))}"
        for example in chosen
    ]
    return [
        {"role": "system", "content": system_prompt(context)},
        {"role": "user", "content": "\n\n".join([*warned, *shown, f"Request: {request}"])},
    ]


STOPWORDS = frozenset(
    {
        *("a", "an", "and", "at", "by", "each", "every", "for", "from", "in", "into", "is"),
        *("it", "its", "of", "on", "one", "or", "the", "then", "to", "with"),
        *("machine", "machines", "device", "devices"),
    }
)


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if w not in STOPWORDS}


def select_examples(
    request: str, examples: Sequence[Mapping[str, Any]], *, count: int = 3
) -> list[Mapping[str, Any]]:
    """The `count` examples whose requests share the most words with `request`
    (cosine over word sets), least similar first: small models follow the last one."""
    wanted = _words(request)

    def similarity(example: Mapping[str, Any]) -> float:
        words = _words(str(example["request"]))
        if not words or not wanted:
            return 0.0
        return len(words & wanted) / math.sqrt(len(words) * len(wanted))

    ranked = sorted(enumerate(examples), key=lambda item: (similarity(item[1]), -item[0]))
    return [example for _, example in ranked[-count:]]


def edit_messages(
    request: str,
    constellation: Constellation,
    context: PlanningContext,
    *,
    reasons: Sequence[str],
    new_prefix: str,
) -> list[ChatMessage]:
    """The bounded view of a running plan, and what the planner may do about it."""
    stars = []
    for star in constellation.stars.values():
        after = [line.source for line in constellation.incoming(star.id)]
        summary = summarise(star).model_dump(exclude_none=True, exclude_defaults=True)
        on = star.on.name if star.on and star.on.name else ANY_DEVICE
        stars.append(
            {"id": star.id, "tool": star.effective_tool, "on": on, "after": after, **summary}
        )
    view = json.dumps({"stars": stars}, separators=(",", ":"))
    return [
        {"role": "system", "content": system_prompt(context)},
        {
            "role": "user",
            "content": (
                f"Request: {request}\n"
                f"The plan is running. Stars and their results so far: {view}\n"
                f"Why you are asked: {'; '.join(reasons)}.\n"
                'Decide: "continue" if the plan still fits the request, "finish" if the '
                'request is already met (stars not started are dropped), "fail" if it '
                'cannot be met, or "edit" to add stars (ids '
                f"{new_prefix}1, {new_prefix}2, ...) or remove stars that have not started. "
                "Add only stars the request needs."
            ),
        },
    ]


def repair_messages(
    messages: Sequence[ChatMessage], output: str, problem: str, *, last: bool = False
) -> list[ChatMessage]:
    """Ask again, showing the rejected output and what was wrong with it (the last time,
    without `${...}` references, which that attempt's grammar rules out)."""
    plain = " This time use no ${...} references." if last else ""
    return [
        *messages,
        {"role": "assistant", "content": output[:2000]},
        {
            "role": "user",
            "content": f"That answer was rejected: {problem}. Answer again with a corrected "
            f"plan.{plain}",
        },
    ]


@cache
def bundled_examples() -> tuple[Mapping[str, Any], ...]:
    """The worked examples in resources/planner/examples.yaml."""
    # PlanLoader, not safe_load: YAML 1.1 would read the key `on` as the boolean true.
    data = yaml.load(EXAMPLES_FILE.read_text(encoding="utf-8"), Loader=PlanLoader)
    return tuple(data)
