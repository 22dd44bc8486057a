"""Confinement of every tool's file access to the workspace."""

from __future__ import annotations

from pathlib import Path, PurePath

from devices.tools.errors import PathOutsideWorkspace, ToolError


def workspace_root(workspace: Path) -> Path:
    """The workspace as an absolute, link-free path; it must exist and be a directory."""
    root = workspace.resolve()
    if not root.is_dir():
        raise ToolError(
            f"the workspace {str(root)!r} does not exist or is not a directory; "
            "create it before running tools"
        )
    return root


def confine(workspace: Path, path: str) -> Path:
    """Resolve `path` (relative to the workspace) to an absolute path inside the workspace.

    Absolute paths, '..' that climbs out, and symbolic links whose target lies outside
    the workspace are refused with `PathOutsideWorkspace`. The check is made on the
    fully resolved path, so links anywhere along the way are followed before it.
    """
    root = workspace_root(workspace)
    pure = PurePath(path)
    if pure.is_absolute() or pure.anchor:
        raise PathOutsideWorkspace(path, root, "absolute paths are not allowed")
    try:
        target = (root / pure).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # link loops, NUL bytes
        raise ToolError(f"cannot resolve path {path!r} in the workspace: {error}") from None
    if not target.is_relative_to(root):
        why = "a symbolic link leads out of it" if ".." not in pure.parts else "'..' leaves it"
        raise PathOutsideWorkspace(path, root, why)
    return target


def relative(workspace: Path, target: Path) -> str:
    """`target` (inside the workspace) as a POSIX path relative to it; '.' for the root."""
    return target.relative_to(workspace.resolve()).as_posix() or "."
