# Toolbox settings for the default model, zf-cifar10 (a ZF-style CNN trained on CIFAR-10, 32x32 input).
# Copy to settings_local.py at the repository root and edit; any name from dvis/toolbox/settings.py
# may be set here, and command-line flags override this file.
model = "zf-cifar10"
images = "input_images"
# 32x32 inputs are tiny: show them large and crisp.
crop = True
global_scale = 1.0
font_scale = 1.0
# Start with the deconvnet back-projection shown: cheap for this small net.
back_presets = (("deconv", "raw"), ("deconv", "norm"), ("guided", "raw"), ("grad", "norm"))
