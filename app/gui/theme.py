"""Light and dark, following the system: the Fusion style with a palette for each scheme,
switched when the system's colour scheme changes."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication


def follow_system_theme(app: QApplication) -> None:
    """Use Fusion, dark or light as the system says, now and when it changes."""
    app.setStyle("Fusion")
    hints = app.styleHints()
    apply_scheme(app, hints.colorScheme() == Qt.ColorScheme.Dark)
    hints.colorSchemeChanged.connect(
        lambda scheme: apply_scheme(app, scheme == Qt.ColorScheme.Dark)
    )


def apply_scheme(app: QApplication, dark: bool) -> None:
    app.setPalette(dark_palette() if dark else app.style().standardPalette())


def dark_palette() -> QPalette:
    palette = QPalette()
    role = QPalette.ColorRole
    for which, color in (
        (role.Window, QColor(37, 39, 44)),
        (role.WindowText, QColor(225, 228, 232)),
        (role.Base, QColor(28, 30, 34)),
        (role.AlternateBase, QColor(45, 48, 54)),
        (role.ToolTipBase, QColor(50, 53, 60)),
        (role.ToolTipText, QColor(230, 230, 230)),
        (role.Text, QColor(225, 228, 232)),
        (role.Button, QColor(48, 51, 57)),
        (role.ButtonText, QColor(225, 228, 232)),
        (role.Highlight, QColor(70, 130, 220)),
        (role.HighlightedText, QColor(255, 255, 255)),
        (role.Mid, QColor(80, 84, 92)),
        (role.PlaceholderText, QColor(140, 145, 152)),
    ):
        palette.setColor(which, color)
    return palette


def is_dark(palette: QPalette) -> bool:
    return palette.window().color().lightness() < 128
