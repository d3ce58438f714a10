# Toolbox settings for VGG16 (torchvision, ImageNet, 224x224 input).
# Copy to settings_local.py at the repository root and edit; command-line flags override this file.
# VGG16 is slow on a CPU (a few passes per second): the worker thread keeps keys responsive, and a
# GPU helps: device = "cuda".
model = "vgg16"
images = "input_images"
device = "cpu"
pause_after_key_s = 0.3
# Wide layers (512 channels) give small tiles: a larger window helps on big screens.
global_scale = 1.0
