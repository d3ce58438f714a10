"""Building blocks of regularized activation maximization (Yosinski et al. 2015), split as in Lucent:
``param`` (where images start and how they map to net input), ``transforms`` (the regularizers
applied between gradient steps), ``objectives`` (what is maximized) and ``presets`` (the paper's
Table 1). :mod:`dvis.pipeline.optimize` runs the loop."""
