"""Names shared by the engine, the pipeline, the toolbox and the CLI, defined once.

Every module that checks, cycles or offers one of these imports it from here.
"""
from __future__ import annotations

#: Back-projection methods (Zeiler & Fergus deconvnet, guided backprop, plain gradient).
BACK_MODES = ("deconv", "guided", "grad")
#: How a back-projection is rendered for display (the original toolbox's back filters).
BACK_FILTERS = ("raw", "gray", "norm", "normblur")
#: Optimized-image methods (dvis.optvis.settings): Yosinski's pixels, Olah's Fourier image, MACO, accentuation.
OPT_METHODS = ("pixel", "fourier", "maco", "accentuate")
#: Kinds of per-unit image in a unit_vis folder: top-9 patches, their back-projections, optimized
#: images (``opt``/``opt_seeds`` the pixel method's, ``opt_<method>``/``opt_seeds_<method>`` and the
#: attribution maps ``attr_<method>`` the others').
UNIT_IMAGE_KINDS = ("top9",) + BACK_MODES + ("opt", "opt_seeds") + tuple(
    f"{kind}_{m}" for m in OPT_METHODS[1:] for kind in ("opt", "opt_seeds", "attr"))
#: The kinds a complete default model ships for every unit (what ``dvis vis-info`` checks).
COMPLETE_KINDS = ("top9", "deconv", "opt")
#: The input transforms of the invariance sweeps (ZF Fig. 5) and the axis each one's amount is plotted on.
TRANSFORMS = {"translate": "vertical shift (pixels)", "scale": "scale factor", "rotate": "rotation (degrees)"}
