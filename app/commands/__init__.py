"""The `orrery` commands, one module per command group, each imported only when it runs.

`runner` runs a command (loop, signals, exit code); `clients` gives it the interface it
drives; `follow` shows a run to its end. `app.cli` maps command names to these modules.
"""
