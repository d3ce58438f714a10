"""Building blocks of optimized images, split as in Lucent: ``param`` (Yosinski et al. 2015's pixel
variable and display), ``fourier`` (Olah et al. 2017's decorrelated Fourier image, Fel et al.
2023's phase-only MACO image, their spectra), ``transforms`` (the pixel method's regularizers and
the batched transformation robustness), ``objectives`` (what is maximized, on every layout, and
the Gram diversity), ``ascent`` (the Adam loop through a parameterization, with MACO's attribution
map), ``methods`` (a batch of units for the spectral methods), ``presets`` (the paper's Table 1)
and ``settings``. :mod:`dvis.pipeline.optimize` batches units and seeds and runs the pixel loop;
docs/optvis.md describes the methods and their figures."""
