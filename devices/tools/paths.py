"""Confinement of every tool's file access to the workspace (and the policy's extra roots)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from devices.tools.errors import PathOutsideWorkspace, ToolError

if TYPE_CHECKING:
    from devices.tools.base import ToolContext


def workspace_root(workspace: Path) -> Path:
    """The workspace as an absolute, link-free path; it must exist and be a directory."""
    root = workspace.resolve()
    if not root.is_dir():
        raise ToolError(
            f"the workspace {str(root)!r} does not exist or is not a directory; "
            "create it before running tools"
        )
    return root


def existing_roots(roots: Sequence[Path]) -> list[Path]:
    """The extra roots as absolute, link-free folders; roots that are not folders are left out."""
    resolved: list[Path] = []
    for root in roots:
        try:
            folder = root.expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if folder.is_dir():
            resolved.append(folder)
    return resolved


def confine(workspace: Path, path: str, *, roots: Sequence[Path] = ()) -> Path:
    """Resolve `path` (relative to the workspace) to an absolute path it may use.

    The fully resolved path (links anywhere along the way followed) must lie inside the
    workspace or inside one of `roots` (the policy's `[fs] roots`, absolute folders);
    otherwise `PathOutsideWorkspace` is raised: for '..' that climbs out, symbolic links
    whose target lies outside, and absolute paths. Without `roots` every absolute path is
    refused, even one inside the workspace; with them, absolute paths inside are fine.
    """
    root = workspace_root(workspace)
    extra = existing_roots(roots)
    pure = PurePath(path)
    absolute = pure.is_absolute() or bool(pure.anchor)
    if absolute and not extra:
        raise PathOutsideWorkspace(path, root, "absolute paths are not allowed")
    try:
        target = (root / pure).resolve()
    except (OSError, RuntimeError, ValueError) as error:  # link loops, NUL bytes
        raise ToolError(f"cannot resolve path {path!r} in the workspace: {error}") from None
    if any(target.is_relative_to(allowed) for allowed in (root, *extra)):
        return target
    if absolute:
        why = "an absolute path outside all of them"
    elif ".." in pure.parts:
        why = "'..' leaves it"
    else:
        why = "a symbolic link leads out of it"
    raise PathOutsideWorkspace(path, root, why, roots=extra)


def confine_in(context: ToolContext, path: str) -> Path:
    """`confine` with the context's workspace and its policy's `[fs] roots`."""
    return confine(context.workspace, path, roots=context.policy.fs.roots)


def relative(workspace: Path, target: Path) -> str:
    """`target` (inside the workspace) as a POSIX path relative to it; '.' for the root."""
    return target.relative_to(workspace.resolve()).as_posix() or "."


def shown(workspace: Path, target: Path) -> str:
    """How results name `target`: relative to the workspace inside it, else absolute."""
    root = workspace.resolve()
    if target.is_relative_to(root):
        return target.relative_to(root).as_posix() or "."
    return target.as_posix()
