# Toolbox settings for ResNet-18 (torchvision, ImageNet, 224x224 input).
# Copy to settings_local.py at the repository root and edit; command-line flags override this file.
# Start the 'b' cycle on gradients and guided back-propagation.
model = "resnet18"
images = "input_images"
pause_after_key_s = 0.2
back_presets = (("grad", "raw"), ("grad", "norm"), ("guided", "raw"), ("guided", "norm"))
