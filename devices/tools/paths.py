"""Confinement of every tool's file access to the workspace (and the policy's extra roots).

A path is checked in two steps, and the second makes the first hold:

1. `locate` resolves it (links followed) and checks that it lies inside the workspace or
   one of the policy's `[fs] roots`: '..' that climbs out, a symbolic link that leads
   out, and absolute paths are refused with `PathOutsideWorkspace`. The result names the
   root it lies under (`base`, link-free) and the link-free components below it.
2. `Confined.open` (and `open_dir`) then opens exactly those components, each relative to
   the one before, starting from a descriptor of `base`, and follows no link on the way:
   `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has it (Linux 5.6+),
   else one `openat(..., O_NOFOLLOW)` per component. A folder swapped for a symbolic link
   between the two steps -- a race another process can run, or a shell star -- makes the
   open fail (`PathOutsideWorkspace`, "it changed while in use") instead of following the
   link out of the workspace.

Every tool that takes a path goes through here: fs.read, fs.write, fs.list, artifact.put,
artifact.get, sys.info, and `cwd` of shell.run and python.run (`process.working_folder`).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING

from devices.tools.errors import PathOutsideWorkspace, ToolError

if TYPE_CHECKING:
    from devices.tools.base import ToolContext

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_FOLDER = os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC

CHANGED = "a symbolic link leads out of it: the path changed while it was in use"

# ------------------------------------------------------------------ openat2 (Linux 5.6+)

_SYS_OPENAT2 = 437  # the same number on every architecture (the generic syscall table)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_RESOLVE = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _load_syscall() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    call.restype = ctypes.c_long
    return call


_syscall = _load_syscall()
openat2_available = _syscall is not None
"""Whether `openat2` is tried (set False to force the per-component walk, as tests do);
it turns False by itself on a kernel that does not have it."""


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    """`openat2(dir_fd, path, how)` with `_RESOLVE`; raises `OSError` (ENOSYS: no openat2)."""
    assert _syscall is not None
    how = _OpenHow(flags, mode if flags & os.O_CREAT else 0, _RESOLVE)
    fd = _syscall(
        ctypes.c_long(_SYS_OPENAT2),
        ctypes.c_int(dir_fd),
        ctypes.c_char_p(os.fsencode(path)),
        ctypes.byref(how),
        ctypes.c_size_t(ctypes.sizeof(how)),
    )
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


# ------------------------------------------------------------------ locating


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


@dataclass(frozen=True)
class Confined:
    """A path a tool may use: `base` (the workspace or an `[fs] roots` folder, link-free)
    and the link-free `parts` below it. `given` and `workspace` are for messages."""

    base: Path
    parts: tuple[str, ...]
    given: str
    workspace: Path

    @property
    def path(self) -> Path:
        return self.base.joinpath(*self.parts)

    def open(self, flags: int, mode: int = 0o666, *, make_dirs: bool = False) -> int:
        """A descriptor of this path, opened with `flags` without following any link on
        the way (see the module docstring); the caller closes it. With `make_dirs`,
        missing folders on the way are made (0777 less the umask, like `mkdir -p`).

        Raises `PathOutsideWorkspace` when a component turned into a symbolic link since
        `locate`, and `OSError` as `open` would (FileNotFoundError, IsADirectoryError...)."""
        flags |= _CLOEXEC
        with self._base() as base:
            if not self.parts:
                return os.open(".", flags, mode, dir_fd=base)
            if openat2_available and not make_dirs:
                opened = self._openat2(base, "/".join(self.parts), flags, mode)
                if opened is not None:
                    return opened
            folder = self._walk(base, self.parts[:-1], make_dirs=make_dirs)
            name = self.parts[-1]
            try:
                return self._guarded(
                    lambda: os.open(name, flags | _NOFOLLOW, mode, dir_fd=folder), folder, name
                )
            finally:
                os.close(folder)

    def open_dir(self) -> int:
        """A descriptor of this folder (`NotADirectoryError` for a file), opened as `open`."""
        return self.open(os.O_RDONLY | _DIRECTORY)

    def open_parent(self, *, make_dirs: bool) -> tuple[int, str]:
        """A descriptor of the folder this path is in, opened as `open`, and its last part
        (to create or replace it there); `ToolError` for the workspace itself."""
        if not self.parts:
            raise ToolError(f"{self.given!r} is the workspace folder itself; name a file in it")
        parent = Confined(self.base, self.parts[:-1], self.given, self.workspace)
        if make_dirs or not openat2_available:
            with self._base() as base:
                return self._walk(base, parent.parts, make_dirs=make_dirs), self.parts[-1]
        return parent.open_dir(), self.parts[-1]

    # -- how

    @contextlib.contextmanager
    def _base(self) -> Iterator[int]:
        try:
            base = os.open(self.base, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
        except OSError as error:
            raise ToolError(f"cannot open {str(self.base)!r}: {error.strerror or error}") from None
        try:
            yield base
        finally:
            os.close(base)

    def _openat2(self, base: int, relative: str, flags: int, mode: int) -> int | None:
        global openat2_available
        try:
            return _openat2(base, relative, flags, mode)
        except OSError as error:
            if error.errno == errno.ENOSYS:  # an older kernel, or a sandbox without it
                openat2_available = False
                return None
            if error.errno == errno.EPERM:  # a seccomp filter that refuses it: walk instead
                return None
            if error.errno in (errno.ELOOP, errno.EXDEV):
                raise self._changed() from None
            raise OSError(error.errno, error.strerror, str(self.path)) from None

    def _walk(self, base: int, names: Sequence[str], *, make_dirs: bool) -> int:
        """A descriptor of the folder `names` lead to from `base`, one `openat` each."""
        folder = os.dup(base)
        try:
            for name in names:
                here = folder

                def step(name: str = name, here: int = here) -> int:
                    return os.open(name, _FOLDER, dir_fd=here)

                try:
                    following = self._guarded(step, here, name)
                except FileNotFoundError:
                    if not make_dirs:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=here)
                    following = self._guarded(step, here, name)
                os.close(folder)
                folder = following
        except BaseException:
            os.close(folder)
            raise
        return folder

    def _guarded(self, opening: Callable[[], int], folder: int, name: str) -> int:
        """`opening()`, with a link found in place of `name` (in `folder`) said as such."""
        try:
            return opening()
        except OSError as error:
            if error.errno == errno.ELOOP or (
                error.errno == errno.ENOTDIR and _is_link(folder, name)
            ):
                raise self._changed() from None
            raise OSError(error.errno, error.strerror, str(self.path)) from None

    def _changed(self) -> PathOutsideWorkspace:
        return PathOutsideWorkspace(self.given, self.workspace, CHANGED)


def _is_link(folder: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def locate(workspace: Path, path: str, *, roots: Sequence[Path] = ()) -> Confined:
    """Where `path` (relative to the workspace) leads, checked: see the module docstring.

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
    for allowed in (root, *extra):
        if target.is_relative_to(allowed):
            return Confined(allowed, target.relative_to(allowed).parts, path, root)
    if absolute:
        why = "an absolute path outside all of them"
    elif ".." in pure.parts:
        why = "'..' leaves it"
    else:
        why = "a symbolic link leads out of it"
    raise PathOutsideWorkspace(path, root, why, roots=extra)


def confine(workspace: Path, path: str, *, roots: Sequence[Path] = ()) -> Path:
    """`locate(...).path`: the absolute path `path` leads to, checked (not yet opened)."""
    return locate(workspace, path, roots=roots).path


def locate_in(context: ToolContext, path: str) -> Confined:
    """`locate` with the context's workspace and its policy's `[fs] roots`."""
    return locate(context.workspace, path, roots=context.policy.fs.roots)


def confine_in(context: ToolContext, path: str) -> Path:
    """`confine` with the context's workspace and its policy's `[fs] roots`."""
    return locate_in(context, path).path


def held_path(fd: int, fallback: Path) -> Path:
    """A path that names what the open descriptor `fd` names, for as long as it is open:
    /proc/self/fd/N on Linux (the kernel's own link to it: nothing planted since can
    change what it reaches), else `fallback`."""
    magic = Path(f"/proc/self/fd/{fd}")
    return magic if sys.platform.startswith("linux") and magic.exists() else fallback


def relative(workspace: Path, target: Path) -> str:
    """`target` (inside the workspace) as a POSIX path relative to it; '.' for the root."""
    return target.relative_to(workspace.resolve()).as_posix() or "."


def shown(workspace: Path, target: Path) -> str:
    """How results name `target`: relative to the workspace inside it, else absolute."""
    root = workspace.resolve()
    if target.is_relative_to(root):
        return target.relative_to(root).as_posix() or "."
    return target.as_posix()
