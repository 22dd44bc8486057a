"""Past plans from the task memory, adapted to the devices connected now.

`recall_plans` turns what `memory.recall.TaskRecall.search` found for a request into:

- `reuse`: a plan that succeeded for (nearly) the same request (similarity at least
  `REUSE_SIMILARITY`) and whose every device is connected or has a connected stand-in
  with the same role (a shared label) — the planner may run it again as it is;
- `examples`: plans that succeeded for closely related requests (at least
  `EXAMPLE_SIMILARITY`), in the planner's own output form, least similar first (small
  models follow the last example most), to show the model instead of bundled examples;
- `avoid`: plans that failed for similar requests (at least `AVOID_SIMILARITY`), with
  what failed, for the prompt to say not to repeat them.

A past plan is *adapted*, never copied blindly: its stars get the planner's ids (s1, s2,
... in dependency order, `${...}` references renamed with them), and every device it
named is mapped to a connected device that offers the tools it ran there — the same
device if it is connected, else one with the same labels (role), else the same platform —
and renamed in titles and arguments. A plan with a device that maps to nothing (or onto a
device another one of its devices maps to), a tool no connected device offers, or lines
the planner cannot express is dropped.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agents.constellation import Constellation, PlanSpec
from agents.planner.context import ANY_DEVICE, PlanningContext
from agents.planner.planner import plan_name
from agents.planner.prompt import bundled_examples, select_examples
from agents.planner.schema import star_id
from agents.planner.validate import InvalidOutput, plan_from_output
from devices.registry import DeviceInfo
from memory.recall import Recollection

REUSE_SIMILARITY = 0.95
"""Requests at least this similar are the same request (wording and case aside), when
they also name the same numbers, files, paths, URLs and quoted text (`specifics`)."""
EXAMPLE_SIMILARITY = 0.5
"""Loosely related requests score 0.3-0.5 with the embedded embedding model (unrelated
ones about 0), closely related ones above. A loosely related plan makes a worse worked
example for a small planner model than the bundled ones: measured on the evaluation set
(leave-one-out) and in `orrery demo`, whose request failed with a 0.35 plan as its
example. So only plans of closely related requests are shown."""
AVOID_SIMILARITY = 0.6
MAX_EXAMPLES = 3
MAX_AVOID = 1

_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_\-]*)\.")


@dataclass(frozen=True)
class PastPlan:
    """One remembered plan, adapted to the fleet of now."""

    request_id: str
    request: str
    status: str
    similarity: float
    plan: dict[str, Any]
    """In the planner's output form: `rationale` and `stars` (id, title, tool, on, args,
    after)."""
    devices: dict[str, str] = field(default_factory=dict)
    """Past device name -> the connected device that stands in for it (changes only)."""
    same_roles: bool = True
    """Every device is connected as it was, or stands in by a shared label."""
    problem: str | None = None
    """For a failed plan: what failed."""

    def example(self) -> dict[str, Any]:
        """As a worked example for the prompt (`request`, `plan`)."""
        return {"request": self.request, "plan": self.plan}

    def describe(self) -> str:
        """`r-… "request" (similarity 0.83)` for a rationale."""
        text = self.request if len(self.request) <= 80 else self.request[:79] + "…"
        return f'{self.request_id} "{text}" (similarity {self.similarity:.2f})'

    def mapping(self) -> str:
        """`nas→storage, laptop→desk`, or "" when no device changed."""
        return ", ".join(f"{old}→{new}" for old, new in sorted(self.devices.items()))


@dataclass(frozen=True)
class RecalledPlans:
    """What the memory offers for one request (see the module docstring)."""

    reuse: PastPlan | None = None
    examples: list[PastPlan] = field(default_factory=list)
    avoid: list[PastPlan] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.reuse is None and not self.examples and not self.avoid


def recall_plans(
    found: Sequence[Recollection], context: PlanningContext, *, request: str
) -> RecalledPlans:
    """Sort and adapt what recall found (nearest first) for `request` on `context`."""
    reuse: PastPlan | None = None
    examples: list[PastPlan] = []
    avoid: list[PastPlan] = []
    wanted = specifics(request)
    for recollection in sorted(found, key=lambda r: -r.similarity):
        record = recollection.request
        if record.summary is None or recollection.similarity < EXAMPLE_SIMILARITY:
            continue
        adapted = adapt_plan(record.summary, context)
        if adapted is None:
            continue
        past = PastPlan(
            request_id=record.id,
            request=record.text,
            status=record.status,
            similarity=recollection.similarity,
            plan=adapted.plan,
            devices=adapted.devices,
            same_roles=adapted.same_roles,
            problem=_problem(record.summary, adapted.ids) if record.status != "succeeded" else None,
        )
        if record.status == "succeeded":
            if (
                reuse is None
                and past.similarity >= REUSE_SIMILARITY
                and past.same_roles
                and specifics(past.request) == wanted
            ):
                reuse = past
            if len(examples) < MAX_EXAMPLES and not any(
                e.request == past.request for e in examples
            ):
                examples.append(past)
        elif record.status == "failed" and past.similarity >= AVOID_SIMILARITY:
            avoid = [*avoid, past][:MAX_AVOID]
    examples.reverse()  # least similar first: the nearest is shown last
    return RecalledPlans(reuse, examples, avoid)


_SPECIFIC = re.compile(r"""(["'])(.+?)\1|[^\s"']*[\d./:~][^\s"']*""")


def specifics(text: str) -> Counter[str]:
    """What two wordings of one request must share exactly (lower-cased): numbers, file
    names, paths, URLs and quoted text. "copy notes.txt to the nas as notes-15.txt" is
    0.96 similar to "... as notes-5.txt" for the embedding model, but another request: a
    plan remembered for one must not be reused for the other."""
    found: Counter[str] = Counter()
    for match in _SPECIFIC.finditer(text.lower()):
        quoted = match.group(2)
        token = quoted.strip() if quoted is not None else match.group(0).strip(".,;:!?()[]")
        if token and (quoted is not None or re.search(r"\w", token)):
            found[token] += 1
    return found


@dataclass(frozen=True)
class Adapted:
    """A past plan in the planner's form for the fleet of now (see `adapt_plan`)."""

    plan: dict[str, Any]
    devices: dict[str, str]
    same_roles: bool
    ids: dict[str, str]
    """Past star id -> its id in `plan`."""


def adapt_plan(summary: Mapping[str, Any], context: PlanningContext) -> Adapted | None:
    """A remembered request's final plan in the planner's form for `context`, with the
    device mapping; None if it cannot run here."""
    plan = summary.get("plan")
    if not isinstance(plan, Mapping):
        return None
    raw = [s for s in plan.get("stars") or [] if isinstance(s, Mapping) and s.get("id")]
    if not raw or plan.get("lines"):
        return None  # completion/condition lines have no form in the planner's output
    ordered = _dependency_order(raw)
    if ordered is None:
        return None
    ids = {str(star["id"]): star_id(index) for index, star in enumerate(ordered)}
    fleet = {str(d.get("name")): d for d in summary.get("fleet") or [] if isinstance(d, Mapping)}
    tools_on: dict[str, set[str]] = {}
    for star in ordered:
        name = _device_name(star.get("on"))
        if name is not None:
            tools_on.setdefault(name, set()).add(_tool(star))
    devices: dict[str, str] = {}
    same_roles = True
    taken: set[str] = set()
    for name in sorted(tools_on, key=lambda n: (context.device(n) is None, n)):
        mapped = _map_device(name, tools_on[name], fleet.get(name), context, taken)
        if mapped is None:
            return None
        target, kept_role = mapped
        if target in taken:
            return None  # two past devices onto one would change what the plan does
        same_roles = same_roles and kept_role
        taken.add(target)
        if target != name:
            devices[name] = target
    stars: list[dict[str, Any]] = []
    for star in ordered:
        tool = _tool(star)
        if tool not in context.tools:
            return None
        on = _selector(star.get("on"), devices, tool, context)
        if on is None:
            return None
        args = dict(star.get("args") or {}) if isinstance(star.get("args"), Mapping) else {}
        if star.get("instruction") and tool == "agent.do":
            args.setdefault("instruction", star["instruction"])
        stars.append(
            {
                "id": ids[str(star["id"])],
                "title": _renamed(str(star.get("title") or ""), ids, devices),
                "tool": tool,
                "on": on,
                "args": _renamed(args, ids, devices),
                "after": [ids[a] for a in star.get("after") or [] if a in ids],
            }
        )
    rationale = _renamed(str(plan.get("rationale") or ""), ids, devices)
    return Adapted({"rationale": rationale, "stars": stars}, devices, same_roles, ids)


def _dependency_order(stars: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]] | None:
    """The stars in an order where each comes after those it waits for (the given order
    where it allows); None for unknown or circular dependencies."""
    by_id = {str(s["id"]): s for s in stars}
    placed: list[Mapping[str, Any]] = []
    done: set[str] = set()
    remaining = list(by_id)
    while remaining:
        for star_id_ in remaining:
            after = [str(a) for a in by_id[star_id_].get("after") or []]
            if any(a not in by_id for a in after):
                return None
            if all(a in done for a in after):
                placed.append(by_id[star_id_])
                done.add(star_id_)
                remaining.remove(star_id_)
                break
        else:
            return None
    return placed


def _tool(star: Mapping[str, Any]) -> str:
    return str(star.get("tool") or "agent.do")


def _device_name(on: Any) -> str | None:
    if isinstance(on, str):
        return None if on == ANY_DEVICE else on
    if isinstance(on, Mapping) and isinstance(on.get("name"), str):
        return str(on["name"])
    return None


def _map_device(
    name: str,
    tools: set[str],
    shape: Mapping[str, Any] | None,
    context: PlanningContext,
    taken: set[str],
) -> tuple[str, bool] | None:
    """The connected device standing in for past device `name` that ran `tools`, and
    whether it kept its role (itself, or a shared label); None if none can."""
    able = [d for d in context.devices if tools <= d.tools]
    same = next((d for d in able if d.name == name), None)
    if same is not None:
        return name, True
    if shape is None:
        return None  # nothing known of what it was
    labels = {str(label) for label in shape.get("labels") or []}
    platform = shape.get("platform")

    def rank(device: DeviceInfo) -> tuple[int, int, str]:
        # most shared labels, then the same platform, then by name
        return (-len(labels & device.labels), -int(device.platform == platform), device.name)

    for device in sorted((d for d in able if d.name not in taken), key=rank):
        if labels & device.labels:
            return device.name, True
        if device.platform == platform:
            return device.name, False
    return None


def _selector(
    on: Any, devices: Mapping[str, str], tool: str, context: PlanningContext
) -> str | None:
    """The `on` of a star in the planner's form: a connected device or `any`."""
    name = _device_name(on)
    if name is not None:
        return devices.get(name, name)
    if on is None or on == ANY_DEVICE:
        return ANY_DEVICE
    if isinstance(on, Mapping):  # labels, platform, GPU: a device that has them now
        labels = {str(label) for label in on.get("labels") or []}
        for device in context.devices:
            if tool not in device.tools or not labels <= device.labels:
                continue
            if on.get("platform") not in (None, device.platform):
                continue
            if on.get("gpu") and not device.gpu:
                continue
            return device.name
        return None
    return None


def _renamed(value: Any, ids: Mapping[str, str], devices: Mapping[str, str]) -> Any:
    """`value` with star references and device names rewritten for the plan of now."""
    if isinstance(value, str):
        text = _REFERENCE.sub(lambda m: "${" + ids.get(m.group(1), m.group(1)) + ".", value)
        for old, new in devices.items():
            text = re.sub(rf"(?<![\w-]){re.escape(old)}(?![\w-])", new, text)
        return text
    if isinstance(value, Mapping):
        return {k: _renamed(v, ids, devices) for k, v in value.items()}
    if isinstance(value, list):
        return [_renamed(v, ids, devices) for v in value]
    return value


def _problem(summary: Mapping[str, Any], ids: Mapping[str, str]) -> str:
    outcome = summary.get("outcome") or {}
    failed = outcome.get("failed_star")
    error = outcome.get("error") or "failed"
    tool = None
    for star in (summary.get("plan") or {}).get("stars") or []:
        if isinstance(star, Mapping) and star.get("id") == failed:
            tool = star.get("tool")
    if failed:
        return f"star {ids.get(failed, failed)}{f' ({tool})' if tool else ''} {error}"
    return str(error)


# ------------------------------------------------------------------------------ planning


def prompt_examples(
    request: str, recalled: RecalledPlans, count: int = MAX_EXAMPLES
) -> list[Mapping[str, Any]] | None:
    """The worked examples for the prompt: the remembered ones last (nearest last), after
    the bundled ones most like the request when memory has fewer than `count`; None
    (the planner's bundled default) when memory has none."""
    if not recalled.examples:
        return None
    mine = [past.example() for past in recalled.examples][-count:]
    missing = count - len(mine)
    bundled = select_examples(request, bundled_examples(), count=missing) if missing > 0 else []
    return [*bundled, *mine]


def prompt_avoid(recalled: RecalledPlans) -> list[dict[str, Any]]:
    """The failed plans for the prompt (`request`, `plan`, `problem`)."""
    return [{**past.example(), "problem": past.problem or "it failed"} for past in recalled.avoid]


def reuse_plan(
    request: str, recalled: RecalledPlans, context: PlanningContext
) -> tuple[PlanSpec, Constellation] | None:
    """The remembered plan for the same request, checked like a generated one on the
    fleet of now, with a rationale that says where it came from; None if there is none
    or it does not validate here."""
    past = recalled.reuse
    if past is None:
        return None
    try:
        spec, constellation = plan_from_output(past.plan, context, name=plan_name(request))
    except InvalidOutput:
        return None
    constellation.rationale = memory_rationale(recalled, str(past.plan.get("rationale") or ""))
    return spec.model_copy(update={"rationale": constellation.rationale}), constellation


def memory_rationale(recalled: RecalledPlans, rationale: str) -> str:
    """`rationale` prefixed with what memory contributed (unchanged when nothing)."""
    if recalled.reuse is not None:
        past = recalled.reuse
        mapped = f"; devices mapped {past.mapping()}" if past.devices else ""
        note = f"From memory: reused the plan that succeeded for {past.describe()}{mapped}."
    elif recalled.examples:
        nearest = recalled.examples[-1]
        note = (
            f"From memory: planned with {len(recalled.examples)} remembered plan(s) as "
            f"examples (nearest: {nearest.describe()})"
        )
        if recalled.avoid:
            note += f", avoiding the failed plan of {recalled.avoid[0].describe()}"
        note += "."
    elif recalled.avoid:
        note = f"From memory: avoiding the failed plan of {recalled.avoid[0].describe()}."
    else:
        return rationale
    return f"{note} {rationale}".strip()


def recalled_from(recalled: RecalledPlans) -> str | None:
    """The remembered request the plan leans on most (reused, or the nearest example)."""
    if recalled.reuse is not None:
        return recalled.reuse.request_id
    return recalled.examples[-1].request_id if recalled.examples else None
