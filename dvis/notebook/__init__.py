"""dvis in Jupyter (``pip install "dvis[notebook]"``; docs/notebook.md).

* :mod:`~dvis.notebook.widget` - :func:`show`: the live toolbox in a cell, an anywidget running
  ``dvis serve``'s session and page client over the widget's comm channel;
* :mod:`~dvis.notebook.models` - what ``model=`` takes: a name or path, a LoadedModel, an ``nn.Module``
  with its preprocessing;
* :mod:`~dvis.notebook.cards` - :func:`unit_card`: one unit as the atlas shows it, inline;
* :mod:`~dvis.notebook.images` - :func:`show_image`: back-projections, maps and images shown with no
  plotting code.

Nothing in dvis imports this package except the lazy exports of ``dvis`` (``dvis.show``, ...).
"""
