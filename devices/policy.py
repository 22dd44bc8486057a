"""A device's policy, where the rest of Orrery imports it from.

The policy is plain data (`devices.tools.policy`: the TOML format, the checks tools make)
and `apply_policy` binds it to a tool registry (`devices.tools.policy_registry`). Both live
under `devices.tools` because `ToolContext` carries the policy; this module re-exports them.
"""

from __future__ import annotations

from devices.tools.policy import (
    ApprovalPolicy,
    DevicePolicy,
    FsPolicy,
    HttpPolicy,
    PolicyError,
    SandboxPolicy,
    ShellPolicy,
    ToolsPolicy,
    default_policy,
    describe_call,
)
from devices.tools.policy_registry import PolicyToolRegistry, apply_policy

__all__ = [
    "ApprovalPolicy",
    "DevicePolicy",
    "FsPolicy",
    "HttpPolicy",
    "PolicyError",
    "PolicyToolRegistry",
    "SandboxPolicy",
    "ShellPolicy",
    "ToolsPolicy",
    "apply_policy",
    "default_policy",
    "describe_call",
]
