# Toolbox settings for your own network. Make a model folder with a model.yaml naming your
# architecture (see examples/custom_model and models/README.md), then copy this file to
# settings_local.py at the repository root and point `model` at the folder.
model = "examples/custom_model"  # a folder path, a folder name under ./models or $DVIS_MODELS
weights = None                   # None: model.yaml's weights; or a state_dict file; or "none"
images = "input_images"          # folder, list file or single image
images_pattern = None            # e.g. r"cat|dog" to show only matching files
device = "cpu"
crop = True                      # centre-crop frames to the model's input aspect (False: stretch)
