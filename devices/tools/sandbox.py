"""Confinement of shell.run and python.run with bubblewrap, and saying what is unconfined.

Without a sandbox, a command that shell.run or python.run may run can do whatever the
device's user can: read any of their files, the device's data dir and its outbox
included, and reach the network. A policy with

    [sandbox]
    mode = "bwrap"     # run shell.run and python.run inside bubblewrap
    network = false    # their own network namespace, with nothing in it (the default)

runs each of them inside `bwrap` (the Debian/Ubuntu package `bubblewrap`): a new mount
namespace in which the system folders (/usr, /bin, /lib*, /etc, ...) and the Python
installation are visible read-only, the workspace (and the policy's `[fs] roots`) is the
only place that can be written, /tmp is private and empty (but for the Python
installation when it lives there), the device's data dir is
hidden (an empty tmpfs over it), and nothing else is there: no home folder, no other
user's files. PIDs, IPC and the hostname are its own; the environment is cleared but for
PATH, LANG and HOME (the workspace) and the star's `env`; all capabilities are dropped.
Without bwrap installed such a policy is refused when the device starts (fail closed).

`unconfined` names the tools a device offers that run outside any such confinement.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devices.tools.policy import DevicePolicy, PolicyError

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
"""Visible (read-only) inside the sandbox, where they exist."""
PROCESS_TOOLS = ("shell.run", "python.run")
"""The tools that run arbitrary programs: what the sandbox confines."""
_KEPT_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")


def find_bwrap() -> str | None:
    """The path of the `bwrap` program, or None when it is not installed."""
    return shutil.which("bwrap")


def python_dirs() -> list[Path]:
    """The folders this interpreter needs to run (`python -I`): its prefixes."""
    found: list[Path] = []
    for folder in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        path = Path(folder).resolve()
        if path not in found:
            found.append(path)
    executable = Path(sys.executable).resolve().parent
    if not any(executable.is_relative_to(path) for path in found):
        found.append(executable)
    return found


@dataclass(frozen=True)
class Bubblewrap:
    """How to run one process inside bwrap (see the module docstring)."""

    program: str
    workspace: Path
    writable: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    network: bool = False

    def wrap(
        self, argv: Sequence[str], cwd: Path, env: Mapping[str, str] | None
    ) -> tuple[list[str], dict[str, str]]:
        """(the bwrap command line that runs `argv` in `cwd`, the environment to start it
        with); the star's `env` is set inside, after everything else is cleared."""
        line = [self.program, "--unshare-all"]
        if self.network:
            line.append("--share-net")
        line += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
        # /tmp first: an interpreter that lives under /tmp (a checkout there) is bound on it
        line += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for system in (*SYSTEM_DIRS, *map(str, python_dirs())):
            line += ["--ro-bind-try", system, system]
        for hidden in self.hidden:  # an empty tmpfs over the data dir, before the binds
            line += ["--tmpfs", str(hidden)]
        for writable in (self.workspace, *self.writable):
            line += ["--bind", str(writable), str(writable)]
        line += ["--chdir", str(cwd), "--clearenv"]
        settings = {name: os.environ[name] for name in _KEPT_ENV if name in os.environ}
        settings["HOME"] = str(self.workspace)
        settings.update(env or {})
        for name, value in settings.items():
            line += ["--setenv", name, value]
        return [*line, "--", *argv], {"PATH": os.environ.get("PATH", os.defpath)}


def sandbox_for(
    policy: DevicePolicy, workspace: Path, hidden: Iterable[Path] = ()
) -> Bubblewrap | None:
    """The sandbox `policy` asks for its process tools (None: none); `PolicyError` if it
    asks for bwrap and bwrap is not installed."""
    if policy.sandbox.mode == "none":
        return None
    program = find_bwrap()
    if program is None:
        raise PolicyError(
            f"{policy.source or 'device policy'}: sandbox.mode: 'bwrap' needs bubblewrap, "
            "which is not installed; install it (apt install bubblewrap, dnf install "
            "bubblewrap) or set mode = 'none'",
            source=policy.source,
            key="sandbox.mode",
        )
    roots = tuple(folder.expanduser().resolve() for folder in policy.fs.roots)
    return Bubblewrap(
        program,
        workspace.resolve(),
        writable=tuple(folder for folder in roots if folder.is_dir()),
        hidden=tuple(folder.resolve() for folder in hidden),
        network=policy.sandbox.network,
    )


def unconfined(policy: DevicePolicy, offered: Iterable[str]) -> list[str]:
    """The tools among `offered` that run with the device user's full rights under
    `policy`: shell.run and python.run without a sandbox, and agent.do when it may call
    one of them."""
    names = set(offered)
    if policy.sandbox.mode != "none":
        return []
    loose = sorted(name for name in PROCESS_TOOLS if name in names)
    if loose and "agent.do" in names:
        loose.append("agent.do")
    return loose


def unconfined_warning(name: str, tools: Sequence[str]) -> str:
    """What a device says at start when it offers `tools` unconfined."""
    return (
        f"device {name}: {', '.join(tools)} run unconfined: a star may run any command or "
        "code with this user's rights (read their files, this device's data dir, the "
        'network); confine them with [sandbox] mode = "bwrap" in the device policy, or '
        "turn them off in [tools] (docs/security.md)"
    )


__all__ = [
    "PROCESS_TOOLS",
    "SYSTEM_DIRS",
    "Bubblewrap",
    "find_bwrap",
    "python_dirs",
    "sandbox_for",
    "unconfined",
    "unconfined_warning",
]
