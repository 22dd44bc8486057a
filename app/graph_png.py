"""Draw a constellation as a PNG without a display or any imaging library.

`render_png(snapshot)` lays the stars out in columns by depth (longest path from a
source), one box per star coloured by status, with its id, tool and status, and draws
the lines between them (solid `success`, dashed `completion`, orange `condition`). Text
uses a built-in 5x7 pixel font (letters drawn upper-case); the PNG is written with zlib.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

Color = tuple[int, int, int]

BOX_W: Final = 210
BOX_H: Final = 48
COL_GAP: Final = 70
ROW_GAP: Final = 22
MARGIN: Final = 24
TITLE_H: Final = 40

BACKGROUND: Final[Color] = (255, 255, 255)
INK: Final[Color] = (30, 30, 30)
STATUS_COLORS: Final[dict[str, Color]] = {
    "pending": (225, 225, 225),
    "ready": (200, 225, 250),
    "running": (140, 190, 250),
    "succeeded": (150, 220, 150),
    "failed": (240, 140, 140),
    "cancelled": (245, 220, 120),
    "skipped": (240, 240, 240),
}
LINE_COLORS: Final[dict[str, Color]] = {
    "success": (60, 60, 60),
    "completion": (90, 90, 160),
    "condition": (220, 130, 20),
}

# 5x7 glyphs, one 5-bit row per entry, top to bottom.
_GLYPHS: Final[dict[str, tuple[int, ...]]] = {
    "A": (14, 17, 17, 31, 17, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14), "D": (28, 18, 17, 17, 17, 18, 28),
    "E": (31, 16, 16, 30, 16, 16, 31), "F": (31, 16, 16, 30, 16, 16, 16),
    "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14), "J": (7, 2, 2, 2, 2, 18, 12),
    "K": (17, 18, 20, 24, 20, 18, 17), "L": (16, 16, 16, 16, 16, 16, 31),
    "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16),
    "Q": (14, 17, 17, 17, 21, 18, 13), "R": (30, 17, 17, 30, 20, 18, 17),
    "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14), "V": (17, 17, 17, 17, 17, 10, 4),
    "W": (17, 17, 17, 21, 21, 21, 10), "X": (17, 17, 10, 4, 10, 17, 17),
    "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14),
    "2": (14, 17, 1, 2, 4, 8, 31), "3": (31, 2, 4, 2, 1, 17, 14),
    "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8),
    "8": (14, 17, 17, 14, 17, 17, 14), "9": (14, 17, 17, 15, 1, 2, 12),
    " ": (0, 0, 0, 0, 0, 0, 0), "-": (0, 0, 0, 31, 0, 0, 0),
    "_": (0, 0, 0, 0, 0, 0, 31), ".": (0, 0, 0, 0, 0, 12, 12),
    ":": (0, 12, 12, 0, 12, 12, 0), "/": (0, 1, 2, 4, 8, 16, 0),
    "(": (2, 4, 8, 8, 8, 4, 2), ")": (8, 4, 2, 2, 2, 4, 8),
    ",": (0, 0, 0, 0, 12, 4, 8), "'": (12, 4, 8, 0, 0, 0, 0),
    "!": (4, 4, 4, 4, 4, 0, 4), "?": (14, 17, 1, 2, 4, 0, 4),
    "=": (0, 0, 31, 0, 31, 0, 0), "+": (0, 4, 4, 31, 4, 4, 0),
    ">": (8, 4, 2, 1, 2, 4, 8), "<": (2, 4, 8, 16, 8, 4, 2),
    "#": (10, 10, 31, 10, 31, 10, 10),
}  # fmt: skip


class Canvas:
    """An RGB raster with the few drawing operations a graph needs."""

    def __init__(self, width: int, height: int, background: Color = BACKGROUND) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            at = 3 * (y * self.width + x)
            self.pixels[at : at + 3] = bytes(color)

    def fill(self, x: int, y: int, w: int, h: int, color: Color) -> None:
        x0, x1 = max(0, x), min(self.width, x + w)
        row = bytes(color) * max(0, x1 - x0)
        for yy in range(max(0, y), min(self.height, y + h)):
            at = 3 * (yy * self.width + x0)
            self.pixels[at : at + len(row)] = row

    def frame(self, x: int, y: int, w: int, h: int, color: Color) -> None:
        self.fill(x, y, w, 2, color)
        self.fill(x, y + h - 2, w, 2, color)
        self.fill(x, y, 2, h, color)
        self.fill(x + w - 2, y, 2, h, color)

    def line(
        self, x0: int, y0: int, x1: int, y1: int, color: Color, *, dash: int = 0, width: int = 2
    ) -> None:
        """Bresenham; with `dash`, draw `dash` pixels on and `dash` off."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        error, step = dx + dy, 0
        while True:
            if not dash or (step // dash) % 2 == 0:
                self.fill(x0, y0, width, width, color)
            if x0 == x1 and y0 == y1:
                return
            doubled = 2 * error
            if doubled >= dy:
                error += dy
                x0 += sx
            if doubled <= dx:
                error += dx
                y0 += sy
            step += 1

    def arrowhead(self, x0: int, y0: int, x1: int, y1: int, color: Color, size: int = 9) -> None:
        """A filled triangle at (x1, y1) pointing along the segment from (x0, y0)."""
        length = max(1.0, ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5)
        ux, uy = (x1 - x0) / length, (y1 - y0) / length
        for i in range(size * 2):
            back = i / 2
            half = back * 0.55
            bx, by = x1 - ux * back, y1 - uy * back
            self.line(
                round(bx - uy * half), round(by + ux * half),
                round(bx + uy * half), round(by - ux * half),
                color, width=1,
            )  # fmt: skip

    def text(self, x: int, y: int, text: str, color: Color = INK, scale: int = 1) -> None:
        for index, char in enumerate(text):
            glyph = _GLYPHS.get(char.upper(), _GLYPHS["?"])
            left = x + index * 6 * scale
            for row, bits in enumerate(glyph):
                for column in range(5):
                    if bits & (1 << (4 - column)):
                        self.fill(left + column * scale, y + row * scale, scale, scale, color)

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.pixels[3 * y * self.width : 3 * (y + 1) * self.width])
            for y in range(self.height)
        )
        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 6))
            + _chunk(b"IEND", b"")
        )


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def edges_of(snapshot: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(from, to, kind) for every line of a serialised constellation, `after` included."""
    stars: Mapping[str, Any] = snapshot.get("stars") or {}
    edges = {
        (str(line["from"]), str(line["to"])): str(line.get("kind", "success"))
        for line in snapshot.get("lines") or []
    }
    for star_id, star in stars.items():
        for upstream in star.get("after") or []:
            edges.setdefault((str(upstream), str(star_id)), "success")
    return [(a, b, kind) for (a, b), kind in edges.items() if a in stars and b in stars]


def layout(
    stars: Sequence[str], edges: Sequence[tuple[str, str, str]]
) -> dict[str, tuple[int, int]]:
    """(column, row) per star: column = longest path from a source; rows ordered by the
    mean row of each star's upstream stars (fewer crossings)."""
    incoming: dict[str, list[str]] = {star: [] for star in stars}
    outgoing: dict[str, list[str]] = {star: [] for star in stars}
    for source, target, _ in edges:
        incoming[target].append(source)
        outgoing[source].append(target)
    waiting = {star: len(incoming[star]) for star in stars}
    frontier = [star for star in stars if waiting[star] == 0]
    column = dict.fromkeys(frontier, 0)
    while frontier:
        star = frontier.pop()
        for target in outgoing[star]:
            column[target] = max(column.get(target, 0), column[star] + 1)
            waiting[target] -= 1
            if waiting[target] == 0:
                frontier.append(target)
    for star in stars:  # a cycle cannot happen in a valid snapshot; place it anyway
        column.setdefault(star, 0)
    place: dict[str, tuple[int, int]] = {}
    for col in range(max(column.values(), default=-1) + 1):
        members = [star for star in stars if column[star] == col]

        def weight(star: str) -> float:
            rows = [place[u][1] for u in incoming[star] if u in place]
            return sum(rows) / len(rows) if rows else float("inf")

        ordered = sorted(members, key=lambda s: (weight(s), stars.index(s)))
        for row, star in enumerate(ordered):
            place[star] = (col, row)
    return place


def render_png(snapshot: Mapping[str, Any], title: str | None = None) -> bytes:
    """The constellation (as `Constellation.model_dump(mode="json", by_alias=True)`) as PNG."""
    stars: Mapping[str, Any] = snapshot.get("stars") or {}
    order = list(stars)
    edges = edges_of(snapshot)
    place = layout(order, edges)
    columns = max((c for c, _ in place.values()), default=0) + 1
    rows = max((r for _, r in place.values()), default=0) + 1
    heading = title or (
        f"{snapshot.get('name', '')}  {snapshot.get('status', '')}  v{snapshot.get('version', 1)}"
    )
    width = max(2 * MARGIN + columns * BOX_W + (columns - 1) * COL_GAP, 24 + 12 * len(heading))
    height = 2 * MARGIN + TITLE_H + rows * BOX_H + (rows - 1) * ROW_GAP
    canvas = Canvas(width, height)
    canvas.text(MARGIN, MARGIN, heading, scale=2)

    def box(star: str) -> tuple[int, int]:
        col, row = place[star]
        return MARGIN + col * (BOX_W + COL_GAP), MARGIN + TITLE_H + row * (BOX_H + ROW_GAP)

    for source, target, kind in edges:
        (sx, sy), (tx, ty) = box(source), box(target)
        x0, y0, x1, y1 = sx + BOX_W, sy + BOX_H // 2, tx - 2, ty + BOX_H // 2
        color = LINE_COLORS.get(kind, INK)
        canvas.line(x0, y0, x1, y1, color, dash=6 if kind == "completion" else 0)
        canvas.arrowhead(x0, y0, x1, y1, color)
    for star_id, star in stars.items():
        x, y = box(star_id)
        status = str(star.get("status", "pending"))
        canvas.fill(x, y, BOX_W, BOX_H, STATUS_COLORS.get(status, STATUS_COLORS["pending"]))
        canvas.frame(x, y, BOX_W, BOX_H, INK)
        canvas.text(x + 8, y + 8, _fit(star_id, (BOX_W - 16) // 12), scale=2)
        tool = str(star.get("tool") or "agent.do")
        canvas.text(x + 8, y + 32, _fit(f"{tool}  {status}", (BOX_W - 16) // 6))
    return canvas.png()


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 2] + ".."
