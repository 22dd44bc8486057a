"""A request in words split into steps, each with the devices it runs on, by code.

The structure of most automation requests is regular: named devices or a quantified set
of them ("every linux machine", "both web servers", "all three builders"), a step per
clause ("..., then ...", "... and save ..."), files and URLs named in the text. This
module finds that structure without a model:

- `resolve_devices` reads the device phrases of a text against the connected fleet:
  names (also spelt with spaces, "gpu box" for `gpubox`, or abbreviated, "spectrometer
  PC" for `spectro-pc`), labels ("the web servers"), platforms ("every linux machine"),
  "every/all/each/both" and "the laptop's"; each with its role: where the step runs,
  where something comes from, or where it goes ("to the nas");
- `split_steps` cuts a request into clauses at sentence ends, ";", "then", and at
  "and"/"," before a verb, noting when a clause runs "at the same time" as the one
  before;
- `mentioned_files`, `mentioned_folders`, `mentioned_urls` and `quoted_text` give what a
  step names, which is all a planned star may touch.

Nothing here knows the evaluation set; the word lists are ordinary English.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from devices.registry import DeviceInfo

Role = Literal["on", "from", "to"]

QUANTIFIERS = frozenset({"every", "all", "each", "both", "any"})
NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
GENERIC_NOUNS = frozenset(
    {
        *("machine", "machines", "device", "devices", "computer", "computers", "server"),
        *("servers", "box", "boxes", "node", "nodes", "host", "hosts", "pc", "pcs"),
        *("workstation", "workstations", "of", "my", "our", "the"),
    }
)
PLATFORM_WORDS = {
    "linux": "linux",
    "windows": "windows",
    "macos": "macos",
    "mac": "macos",
    "macs": "macos",
    "osx": "macos",
}
VERBS = frozenset(
    {
        *("add", "append", "archive", "back", "build", "calculate", "capture", "check"),
        *("clean", "collect", "combine", "compile", "compute", "copy", "count", "create"),
        *("delete", "download", "dump", "fetch", "find", "get", "keep", "list", "log"),
        *("look", "move", "note", "pack", "print", "prune", "put", "read", "record"),
        *("remove", "rename", "report", "restart", "run", "save", "send", "show", "sort"),
        *("store", "summarise", "summarize", "sync", "tell", "test", "upload", "verify"),
        *("write", "zip", "work", "measure", "install", "update", "ensure", "make"),
        *("transfer", "gather", "query", "ping", "stop", "start", "display", "then"),
        *("only", "once", "when", "afterwards", "finally", "tar", "compress", "email"),
        *("bring", "take", "distribute", "export", "import", "use", "see", "open", "kill"),
        *("combined", "written", "saved", "collected", "upload"),
    }
)
PARALLEL_WORDS = ("at the same time", "in parallel", "simultaneously", "meanwhile", "while")

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]*(?:'s)?")
_URL = re.compile(r"https?://[^\s\"'<>]+")
_FILE = re.compile(
    r"(?<![\w/.\-])((?:[\w.\-]+/)*[\w\-]+\.[A-Za-z][A-Za-z0-9]{0,5})(?![\w/])(?!\.\w)"
)
_FOLDER_PATH = re.compile(r"(?<![\w:/.\-])(/?(?:[\w.\-]+/)+[\w.\-]*)(?![\w/])")
_NAMED_FOLDER = re.compile(
    r"\b(?:the\s+)?([\w.\-]+)\s+(?:folder|directory|dir)\b|\b(?:folder|directory)\s+"
    r"(?:named\s+|called\s+)?['\"]?([\w.\-/]+)",
    re.IGNORECASE,
)
_NAMED_FILE = re.compile(
    r"\b(?:file|files)\s+(?:named|called)\s+['\"]?([\w.\-/]+)|\binto\s+([A-Z][A-Z0-9_]{2,})\b"
)
_CAPITAL_FOLDER = re.compile(r"\b(?:in|under|inside|of)\s+(?:the\s+)?([A-Z][a-z][\w\-]*)\b(?!'s)")
_QUOTED = re.compile(r"\"([^\"]{1,300})\"|“([^”]{1,300})”")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z])|;\s*")


@dataclass(frozen=True)
class DeviceMention:
    """Devices one phrase of a text names, with the phrase's role and position."""

    devices: tuple[str, ...]
    role: Role
    start: int
    quantified: bool = False
    end: int = 0


@dataclass
class Step:
    """One clause of a request: its text, the devices it names, whether it runs at the
    same time as the step before it (`parallel`)."""

    text: str
    mentions: list[DeviceMention] = field(default_factory=list)
    parallel: bool = False

    def devices(self, *roles: Role) -> list[str]:
        """The devices named with one of `roles` (every role if none), in order."""
        found: dict[str, None] = {}
        for mention in self.mentions:
            if not roles or mention.role in roles:
                found.update(dict.fromkeys(mention.devices))
        return list(found)


# --- devices ------------------------------------------------------------------------------


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _parts(name: str) -> list[str]:
    return [part for part in re.split(r"[^a-z0-9]+", name.lower()) if part]


def _label_matches(word: str, label: str) -> bool:
    """`builders` and `build`, `tills` and `till`, `storage` and `storage`."""
    label = label.lower()
    if word in (label, label + "s", label + "es"):
        return True
    return len(label) >= 4 and word.startswith(label) and len(word) - len(label) <= 3


def _name_matches(words: Sequence[str], name: str) -> bool:
    """Whether these consecutive words spell device `name`: `gpu box` for gpubox,
    `back-office` for backoffice, `spectrometer pc` for spectro-pc."""
    if _squash("".join(words)) == _squash(name):
        return True
    parts = _parts(name)
    if len(parts) != len(words) or len(parts) < 2:
        return False
    return all(
        word == part or (len(part) >= 4 and word.startswith(part))
        for word, part in zip(words, parts, strict=True)
    )


def _role_before(text: str, start: int) -> Role:
    before = text[max(0, start - 24) : start].lower()
    words = re.findall(r"[a-z]+", before)
    for word in reversed(words[-4:]):
        if word in ("to", "onto", "into"):
            return "to"
        if word == "from":
            return "from"
        if word in ("on", "of", "at", "in", "for", "have"):
            return "on"
    return "on"


def masked(text: str) -> str:
    """`text` with URLs and file names blanked out (same length): `builds.txt` is no
    mention of the build machines."""
    for pattern in (_URL, _FILE):
        text = pattern.sub(lambda match: " " * len(match.group(0)), text)
    return text


def resolve_devices(text: str, fleet: Sequence[DeviceInfo]) -> list[DeviceMention]:
    """The device phrases of `text`, in order; see the module docstring."""
    text = masked(text)
    tokens = [(m.group(0), m.start()) for m in _TOKEN.finditer(text)]
    words = [token.lower().removesuffix("'s") for token, _ in tokens]
    names = sorted((device.name for device in fleet), key=len, reverse=True)
    labels = sorted({label for device in fleet for label in device.labels})
    mentions: list[DeviceMention] = []
    used: set[int] = set()
    # Names first: up to three words, the longest match wins.
    for index in range(len(words)):
        if index in used:
            continue
        for size in (3, 2, 1):
            span = words[index : index + size]
            if len(span) < size or any(i in used for i in range(index, index + size)):
                continue
            name = next((n for n in names if _name_matches(span, n)), None)
            if name is not None:
                start = tokens[index][1]
                role: Role = "from" if tokens[index + size - 1][0].endswith("'s") else "on"
                if role == "on":
                    role = _role_before(text, start)
                last = tokens[index + size - 1]
                mentions.append(DeviceMention((name,), role, start, end=last[1] + len(last[0])))
                used.update(range(index, index + size))
                break
    # Then sets: a quantifier or a plural label/platform phrase.
    index = 0
    while index < len(words):
        if index in used:
            index += 1
            continue
        phrase_end = index
        quantified = False
        platform: str | None = None
        wanted: list[str] = []
        generic = False
        plural = False
        cursor = index
        while cursor < len(words) and cursor not in used and cursor - index < 6:
            word = words[cursor]
            if word in QUANTIFIERS:
                quantified = True
            elif word in NUMBERS:
                quantified = True  # "all three": the words select, the count is not checked
            elif word in PLATFORM_WORDS:
                if platform is not None:
                    break  # "linux, windows and macos": one phrase each
                platform = PLATFORM_WORDS[word]
            elif any(_label_matches(word, label) for label in labels):
                wanted += [label for label in labels if _label_matches(word, label)]
                plural = plural or word not in labels
            elif word in GENERIC_NOUNS:
                generic = word not in ("of", "the", "my", "our")
            else:
                break
            phrase_end = cursor
            cursor += 1
        if phrase_end == index and not (words[index] in PLATFORM_WORDS or wanted or quantified):
            index += 1
            continue
        matched = [
            device.name
            for device in fleet
            if (platform is None or device.platform == platform)
            and (not wanted or any(label in device.labels for label in wanted))
        ]
        meaningful = (
            platform is not None
            or (wanted and (quantified or generic or plural))
            or (quantified and generic)
        )
        if meaningful and matched:
            if platform is not None and not wanted and not quantified and not generic:
                # A bare platform word ("build it on linux and windows"): prefer the
                # devices that carry it in their name, if any do.
                named = [n for n in matched if platform in _parts(n) or "mac" in _parts(n)]
                matched = named or matched
            start = tokens[index][1]
            last = tokens[phrase_end]
            mentions.append(
                DeviceMention(
                    tuple(matched),
                    _role_before(text, start),
                    start,
                    quantified or len(matched) > 1,
                    end=last[1] + len(last[0]),
                )
            )
        index = cursor if cursor > index else index + 1
    mentions.sort(key=lambda mention: mention.start)
    # "from the scope PC and the spectrometer PC": a list keeps its first item's role.
    for k in range(1, len(mentions)):
        between = text[mentions[k - 1].end : mentions[k].start].lower()
        if re.fullmatch(r"(?:[\s,]|and|or|the|pc|machine|box)*", between):
            previous = mentions[k - 1]
            mentions[k] = dataclasses.replace(mentions[k], role=previous.role)
    return mentions


# --- steps --------------------------------------------------------------------------------

_SPLIT = re.compile(
    r",?\s+and\s+then\s+|,\s*then\s+|\s+then\s+|,\s*and\s+(?=[a-z]+\b)|,\s+(?=[a-z]+\b)"
    r"|\s+and\s+(?=[a-z]+\b)",
)


def _starts_with_verb(text: str) -> bool:
    first = re.findall(r"[a-z][a-z\-]*", text.lower()[:40])
    if not first:
        return False
    if first[0] in ("at", "in") and " ".join(first[:4]).startswith(
        ("at the same time", "in parallel")
    ):
        return True
    if first[0] == "have" and len(first) > 1:
        return True
    return first[0] in VERBS


def split_steps(request: str, fleet: Sequence[DeviceInfo]) -> list[Step]:
    """The clauses of `request`, each with its device mentions; see the module docstring."""
    text = " ".join(request.split())
    clauses: list[tuple[str, bool]] = []
    for sentence in _SENTENCE.split(text):
        sentence = sentence.strip().rstrip(".!?").strip()
        if not sentence:
            continue
        pieces: list[tuple[str, bool]] = []
        position = 0
        pending_parallel = False
        for match in _SPLIT.finditer(sentence):
            before, after = sentence[position : match.start()], sentence[match.end() :]
            separator = match.group(0)
            is_then = "then" in separator
            if not is_then and not _starts_with_verb(after):
                continue
            if not is_then and after.lower().startswith("have ") and not _write_soon(after):
                continue
            if not before.strip() or not _has_content(before):
                continue
            together = any(word in after.lower()[:30] for word in PARALLEL_WORDS)
            if _strip_connectives(before):
                pieces.append((before.strip(" ,"), pending_parallel))
                pending_parallel = together
            else:
                pending_parallel = pending_parallel or together
            position = match.end()
        pieces.append((sentence[position:].strip(" ,"), pending_parallel))
        clauses += pieces
    merged: list[tuple[str, bool]] = []
    carry = ""
    for clause, parallel in clauses:
        clause = _strip_connectives(clause)
        if not clause:
            continue
        if carry:
            clause, carry = f"{carry}, {clause}", ""
        if _is_prefix_only(clause):
            carry = clause
            continue
        merged.append((clause, parallel))
    if carry:
        merged.append((carry, False))
    return [Step(clause, resolve_devices(clause, fleet), parallel) for clause, parallel in merged]


_CONDITION = re.compile(r"^(?:if|when|once|unless|as soon as|after|only)\b", re.IGNORECASE)


def _is_prefix_only(clause: str) -> bool:
    """A clause that is no step of its own: a condition ("if they pass") or a place
    ("On the iMac") that belongs to the clause after it."""
    words = re.findall(r"[a-z]+", clause.lower())
    if _CONDITION.match(clause) and not any(
        word in VERBS - {"only", "once", "when"} for word in words[1:]
    ):
        return True
    return bool(words) and words[0] in ("on", "from", "at") and len(words) <= 4


def _write_soon(text: str) -> bool:
    head = text.split(",")[0][:60].lower()
    return bool(re.search(r"\b(write|save|record|log|append|put|note)\w*\b", head))


def _has_content(text: str) -> bool:
    return len(re.findall(r"[A-Za-z]{2,}", text)) >= 2


def _strip_connectives(clause: str) -> str:
    clause = re.sub(
        r"^(?:(?:and|then|afterwards|finally|also)\b[\s,]*|(?:at the same time|in parallel)"
        r"[\s,]*)+",
        "",
        clause.strip(" ,"),
        flags=re.IGNORECASE,
    ).strip(" ,")
    return re.sub(r"[\s,]+(?:and|then)$", "", clause, flags=re.IGNORECASE)


# --- what a step names --------------------------------------------------------------------


def mentioned_urls(text: str) -> list[str]:
    return [url.rstrip(".,;:)") for url in _URL.findall(text)]


def mentioned_files(text: str, fleet: Sequence[DeviceInfo] = ()) -> list[str]:
    """File names and paths with an extension (`notes/a.txt`), and names given as
    `a file named X` or `into VERSION`, in order, without URLs and device names."""
    without_urls = _URL.sub(" ", text)
    devices = {_squash(device.name) for device in fleet}
    found: dict[str, None] = {}
    for match in _FILE.finditer(without_urls):
        name = match.group(1)
        if _squash(name) in devices or re.fullmatch(r"[\d.]+", name):
            continue
        found[name] = None
    for match in _NAMED_FILE.finditer(without_urls):
        found[next(group for group in match.groups() if group)] = None
    return list(found)


def mentioned_folders(text: str, fleet: Sequence[DeviceInfo] = ()) -> list[str]:
    """Folders: `/var/log`, `build/`, `the Downloads folder`, `folder inbox`, `in
    Downloads` (a capitalised name after in/under/from), in order."""
    without_urls = _URL.sub(" ", text)
    devices = {_squash(device.name) for device in fleet} | {
        part for device in fleet for part in _parts(device.name)
    }
    found: dict[str, None] = {}
    for match in _FOLDER_PATH.finditer(without_urls):
        path = match.group(1)
        if not _FILE.fullmatch(path.rstrip("/")) or path.endswith("/"):
            found[path] = None
    for match in _CAPITAL_FOLDER.finditer(without_urls):
        if match.group(1).lower() not in devices:
            found[match.group(1)] = None
    for match in _NAMED_FOLDER.finditer(without_urls):
        name = next(group for group in match.groups() if group)
        if name.lower() not in ("the", "a", "that", "this", "each", "every", "their", "its"):
            found[name] = None
    return list(found)


def quoted_text(text: str) -> str | None:
    match = _QUOTED.search(text)
    return next(group for group in match.groups() if group) if match else None
