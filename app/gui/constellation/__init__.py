"""The constellation view: one drawing of a constellation, live in the window and offscreen.

- `layout`: where each star sits (a layered drawing with crossing reduction that keeps
  its places when the plan is edited). Pure Python.
- `view_model`: what each star and line shows, from a snapshot and then from events.
  Pure Python.
- `view.ConstellationView`: the widget (zoom, pan, fit, minimap, legend, signals).
- `render.render_png` / `render.render_svg`: the same scene drawn into a file, without a
  display (`orrery show ID --png FILE`).

This `__init__` imports nothing, so the pure modules load without Qt.
"""
