"""`orrery device`: this machine as a device agent of an orchestrator, until stopped.

The enrolment token comes from `--token-file FILE`, else `$ORRERY_DEVICE_TOKEN`, else
`--token` (warned about on stderr: every local user can read a command line). The agent
says on stderr when it connects, loses the connection and stops, and at start which of
its tools run unconfined (see docs/security.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from app.commands.clients import TokenMissing, token_file, warn_command_line_token
from app.config import data_dir
from app.device_processes import DEVICE_TOKEN_ENV
from app.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from app.text_safety import one_line


def device_token(options: argparse.Namespace) -> str:
    """The token of `--token-file`, `$ORRERY_DEVICE_TOKEN` or `--token` (warned about),
    in that order; `TokenMissing` says the ways to give one."""
    if options.token_file:
        return token_file(options.token_file, "the device's enrolment token")
    if os.environ.get(DEVICE_TOKEN_ENV):
        return os.environ[DEVICE_TOKEN_ENV].strip()
    if options.token:
        warn_command_line_token(DEVICE_TOKEN_ENV)
        return str(options.token)
    raise TokenMissing(
        f"no enrolment token: use --token-file FILE (or set ${DEVICE_TOKEN_ENV}); "
        "`orrery devices enroll NAME` on the orchestrator prints one"
    )


async def main(options: argparse.Namespace, stop: asyncio.Event) -> int:
    from app.device_run import load_policy, run_device
    from devices.agent import DeviceRefused

    data = data_dir(options.data_dir)
    try:
        token = device_token(options)
    except TokenMissing as exc:
        print(f"orrery: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    os.environ.pop(DEVICE_TOKEN_ENV, None)  # not handed down to the commands stars run
    policy = load_policy(data, Path(options.policy) if options.policy else None)
    device_log = logging.getLogger("orrery.device")
    if device_log.getEffectiveLevel() > logging.INFO:
        device_log.setLevel(logging.INFO)  # connects, drops and stops are said by default
    try:
        await run_device(
            server=options.server,
            name=options.name,
            token=token,
            data_dir=data,
            labels=[label for label in options.labels.split(",") if label],
            max_tasks=options.max_tasks,
            workspace=Path(options.workspace) if options.workspace else None,
            tls_ca=Path(options.tls_ca) if options.tls_ca else None,
            policy=policy,
            shutdown_grace=options.shutdown_grace,
            stop=stop,
        )
    except DeviceRefused as exc:
        print(f"orrery: device refused: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK
