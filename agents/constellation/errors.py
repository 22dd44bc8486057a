"""Every error a plan or an edit batch can be refused with.

Each error names the offending item (a star id, a line, a reference), where it sits
(`location`, a path into the plan such as ``("stars", 2, "after", 0)``), and, for an
edit batch, the index of the edit that caused it. Messages say what to do.

    ConstellationError
    ├── DuplicateStarId      two stars share an id
    ├── DuplicateLine        two lines join the same pair of stars
    ├── UnknownStar          a line, edit or `after` names a star that does not exist
    ├── DanglingLine         an edit leaves a line whose end no longer exists
    ├── CycleDetected        the dependencies would form a cycle
    ├── BadReference         a ${star.output...} reference is malformed or not upstream
    ├── UnknownTool          no known device offers the tool
    ├── StarNotEditable      an edit touches a running or finished star
    └── NothingToUndo        undo with no batch left to undo
"""

from __future__ import annotations

Location = tuple[str | int, ...]


class ConstellationError(ValueError):
    """Base of all plan and edit errors; `item` is what is wrong, `location` where."""

    def __init__(
        self,
        message: str,
        *,
        item: str,
        location: Location = (),
        edit_index: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.item = item
        self.location = location
        self.edit_index = edit_index

    def at_edit(self, index: int) -> ConstellationError:
        """Attach the index of the edit in a batch that caused this error."""
        self.edit_index = index
        if not self.location:
            self.location = ("edits", index)
        return self

    def __str__(self) -> str:
        prefix = f"edit #{self.edit_index}: " if self.edit_index is not None else ""
        return f"{prefix}{self.message}"


class DuplicateStarId(ConstellationError):
    pass


class DuplicateLine(ConstellationError):
    pass


class UnknownStar(ConstellationError):
    pass


class DanglingLine(ConstellationError):
    pass


class CycleDetected(ConstellationError):
    pass


class BadReference(ConstellationError):
    pass


class UnknownTool(ConstellationError):
    pass


class StarNotEditable(ConstellationError):
    pass


class NothingToUndo(ConstellationError):
    pass
