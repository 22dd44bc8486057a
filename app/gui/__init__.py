"""The desktop app (PySide6 + qasync): the only package of Orrery that imports Qt."""
