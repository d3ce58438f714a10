"""The interactive toolbox window: settings, key bindings, state, pane renderers, workers, app loop."""
