"""The constellation drawn into a file with the app's own scene, without a display.

`render_png(constellation, path)` and `render_svg(constellation, path)` take a
constellation as the interface serialises it (`Snapshot.constellation`, with `name` and
`status`), lay it out and paint the same `ConstellationScene` the window shows: a title
(name, status, version, star count), the drawing, and the legend (devices, states, line
kinds). Text uses the system's fonts through fontconfig.

If no Qt application exists, one is created on the `offscreen` platform (no display
needed) and kept for the life of the process; an existing `QApplication` (the desktop
app's) is used as it is. Call these from the thread that runs Qt (the main thread).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QPointF, QRectF, QSize, QSizeF, Qt
from PySide6.QtGui import QFont, QFontMetricsF, QImage, QPainter
from PySide6.QtSvg import QSvgGenerator
from PySide6.QtWidgets import QApplication

from app.gui.constellation.legend import Legend
from app.gui.constellation.scene import ConstellationScene
from app.gui.constellation.style import DARK, LIGHT

MARGIN = 24.0
MAX_SIDE = 8000
"""A drawing larger than this (in pixels, either side) is scaled down to fit."""
LEGEND_WIDTH = 640.0

_APPLICATION: list[QApplication] = []


class RenderError(RuntimeError):
    """The drawing cannot be made in this process (say, a Qt application without
    widgets already runs)."""


def application() -> QApplication:
    """The running `QApplication`, or a new one on the offscreen platform."""
    existing = QApplication.instance()
    if isinstance(existing, QApplication):
        return existing
    if existing is not None:
        raise RenderError(
            f"a {type(existing).__name__} already runs in this process; drawing a "
            "constellation needs a QApplication (create that one instead)"
        )
    created = QApplication(["orrery", "-platform", "offscreen"])
    _APPLICATION.append(created)  # one for the process; never a second
    return created


def render_png(
    constellation: Mapping[str, Any], path: str | Path, *, dark: bool = False, scale: float = 1.0
) -> None:
    """Draw `constellation` into a PNG file at `path` (raises `OSError` if it cannot
    be written)."""
    Path(path).write_bytes(png_bytes(constellation, dark=dark, scale=scale))


def png_bytes(constellation: Mapping[str, Any], *, dark: bool = False, scale: float = 1.0) -> bytes:
    image = render_image(constellation, dark=dark, scale=scale)
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    # PySide6 6.12's stubs want bytes for the format; the binding takes only str.
    if not image.save(buffer, "PNG"):  # type: ignore[call-overload]
        raise RenderError(f"Qt could not encode a {image.width()}x{image.height()} PNG")
    buffer.close()
    return bytes(data.data())


def render_image(
    constellation: Mapping[str, Any], *, dark: bool = False, scale: float = 1.0
) -> QImage:
    """The drawing as an RGB image."""
    application()
    picture = _Picture(constellation, dark=dark)
    drawing = max(picture.drawing.width(), picture.drawing.height(), 1.0) * scale
    if drawing > MAX_SIDE:  # a huge plan: only the drawing shrinks, title and legend stay
        picture.set_drawing_scale(MAX_SIDE / drawing)
    size = picture.size * scale
    image = QImage(QSize(round(size.width()), round(size.height())), QImage.Format.Format_RGB32)
    image.fill(picture.scene.look.theme.background)
    painter = QPainter(image)
    painter.scale(scale, scale)
    picture.paint(painter)
    painter.end()
    return image


def render_svg(constellation: Mapping[str, Any], path: str | Path, *, dark: bool = False) -> None:
    """Draw `constellation` into an SVG file at `path` (text stays text)."""
    Path(path).write_bytes(svg_bytes(constellation, dark=dark))


def svg_bytes(constellation: Mapping[str, Any], *, dark: bool = False) -> bytes:
    application()
    picture = _Picture(constellation, dark=dark)
    data = QByteArray()
    buffer = QBuffer(data)
    buffer.open(QIODevice.OpenModeFlag.WriteOnly)
    generator = QSvgGenerator()
    generator.setOutputDevice(buffer)
    size = picture.size
    generator.setSize(QSize(round(size.width()), round(size.height())))
    generator.setViewBox(QRectF(0, 0, size.width(), size.height()))
    generator.setTitle(picture.title)
    generator.setDescription(picture.subtitle)
    painter = QPainter(generator)
    painter.fillRect(QRectF(0, 0, size.width(), size.height()), picture.scene.look.theme.background)
    picture.paint(painter)
    painter.end()
    buffer.close()
    return bytes(data.data())


class _Picture:
    """Title, drawing and legend of one constellation, measured once."""

    def __init__(self, constellation: Mapping[str, Any], *, dark: bool) -> None:
        font = QFont(QApplication.font())
        font.setPointSizeF(10.0)
        self.scene = ConstellationScene(theme=DARK if dark else LIGHT, font=font, animate=False)
        self.scene.set_snapshot(constellation)
        self.scene.flush()
        model = self.scene.model
        stars = len(model.stars)
        name = str(constellation.get("name") or model.id or "constellation")
        status = str(constellation.get("status") or model.status or "")
        self.title = f"{name} — {status}" if status else name
        parts = [model.id] if model.id else []
        parts += [f"version {model.version}", f"{stars} star{'s' if stars != 1 else ''}"]
        if model.retry_of:
            parts.append(f"retry of {model.retry_of}")
        self.subtitle = " · ".join(parts)
        self.title_font = QFont(font)
        self.title_font.setPointSizeF(15.0)
        self.title_font.setBold(True)
        self.title_metrics = QFontMetricsF(self.title_font)
        self.legend = Legend(model, self.scene.look)
        self.drawing = self.scene.sceneRect() if stars else QRectF(0, 0, 0, 0)
        self.head = self.title_metrics.height() + self.scene.look.small_metrics.height() + 12
        self.set_drawing_scale(1.0)

    def set_drawing_scale(self, scale: float) -> None:
        """Draw the constellation at `scale` (title and legend keep their size)."""
        self.drawing_scale = scale
        self.drawn = QSizeF(self.drawing.width() * scale, self.drawing.height() * scale)
        width = max(
            self.drawn.width(),
            self.title_metrics.horizontalAdvance(self.title) + MARGIN,
            self.scene.look.small_metrics.horizontalAdvance(self.subtitle) + MARGIN,
        )
        self.legend_width = max(LEGEND_WIDTH, width)
        self.legend_size = self.legend.size(self.legend_width)
        width = max(width, self.legend_size.width())
        self.size = QSize(
            round(width + 2 * MARGIN),
            round(MARGIN + self.head + self.drawn.height() + self.legend_size.height() + MARGIN),
        ).toSizeF()

    def paint(self, painter: QPainter) -> None:
        look = self.scene.look
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.TextAntialiasing)
        painter.setPen(look.theme.text)
        painter.setFont(self.title_font)
        painter.drawText(QPointF(MARGIN, MARGIN + self.title_metrics.ascent()), self.title)
        painter.setFont(look.small_font)
        painter.setPen(look.theme.muted)
        below = MARGIN + self.title_metrics.height() + 4 + look.small_metrics.ascent()
        painter.drawText(QPointF(MARGIN, below), self.subtitle)
        top = MARGIN + self.head
        if not self.drawing.isEmpty():
            target = QRectF(MARGIN, top, self.drawn.width(), self.drawn.height())
            self.scene.render(painter, target, self.drawing, Qt.AspectRatioMode.KeepAspectRatio)
        self.legend.paint(
            painter, QPointF(MARGIN - 10, top + self.drawn.height()), self.legend_width
        )
