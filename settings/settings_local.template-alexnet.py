# Toolbox settings for AlexNet (torchvision, ImageNet, 224x224 input).
# Copy to settings_local.py at the repository root and edit; command-line flags override this file.
# The weights come from torchvision's cache ($TORCH_HOME/hub/checkpoints); set weights = "none" to
# try the toolbox with random init and no download.
model = "alexnet"
images = "input_images"
crop = True
# A forward + backward pass takes tens of ms on a CPU: wait a little longer after keys.
pause_after_key_s = 0.2
