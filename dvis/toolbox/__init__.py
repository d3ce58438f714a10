"""The interactive toolbox: one core, three drivers.

Core (no window, no files, no threads of its own beyond its workers):

* :mod:`dvis.toolbox.settings` - every setting with its default;
* :mod:`dvis.toolbox.state` / :mod:`dvis.toolbox.actions` - the view state and the table of actions
  (keys, help, pure transitions, effects);
* :mod:`dvis.toolbox.workers` - the compute worker and the unit-image loader;
* :mod:`dvis.toolbox.render` - pure pane renderers;
* :class:`dvis.toolbox.app.Toolbox` - ties them together into one RGB canvas (drawn by its base,
  :class:`dvis.toolbox.painting.Painting`).

Drivers: :func:`dvis.toolbox.drivers.run_window` (OpenCV window), :func:`dvis.toolbox.drivers.run_keys`
(headless key list) and :mod:`dvis.web` (browser).

Headless API (stable; used by tests, bench/ and soak runs)::

    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.drivers import perform, run_keys

    tb = Toolbox(model, settings, headless=True)   # model: dvis.models.loading.LoadedModel
    effects = tb.press("b")      # a key name (dvis.toolbox.keys); returns effects, e.g. ("screenshot",)
    perform(tb, effects)         # optional: the window's way of doing them (PNG into screenshot_dir)
    tb.click(x, y)               # a click at canvas pixel (x, y): layer name or unit tile
    tb.add_image(name, rgb)      # an in-memory image appended to the image list and shown
    tb.settle()                  # wait until the worker and the loader caught up with the state
    canvas = tb.render()         # H x W x 3 uint8 RGB (tb.state, tb.status_text() describe it)
    run_keys(tb, ["right", "b", "click:400,100"], out_dir)   # all of the above per key, PNG per key
    tb.close()
"""
