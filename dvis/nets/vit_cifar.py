"""A Vision Transformer for 32x32 CIFAR images: torchvision's own ``VisionTransformer``.

Image 32, patch 4 (an 8x8 grid of 64 patch tokens) and the class token, built by torchvision's
class unchanged, so dvis shows what a user's torchvision ViT shows: ``conv_proj`` is the patch
embedding (chw on the 8x8 grid), ``encoder.layers.encoder_layer_K`` are tokens with the class token,
``heads.head`` classifies the class token. LayerNorm and GELU stay as trained.
"""
from __future__ import annotations

from torchvision.models.vision_transformer import VisionTransformer

#: Default depth, heads, token width and MLP width (ViT-Tiny's width at half its depth).
LAYERS = 6
HEADS = 6
HIDDEN = 192
MLP = 384


def vit_cifar(
    num_classes: int = 10,
    num_layers: int = LAYERS,
    num_heads: int = HEADS,
    hidden_dim: int = HIDDEN,
    mlp_dim: int = MLP,
    patch_size: int = 4,
    dropout: float = 0.0,
) -> VisionTransformer:
    """Build torchvision's VisionTransformer for 32x32 images."""
    return VisionTransformer(image_size=32, patch_size=patch_size, num_layers=num_layers, num_heads=num_heads,
                             hidden_dim=hidden_dim, mlp_dim=mlp_dim, dropout=dropout, num_classes=num_classes)


def vit_cifar_layers(net: VisionTransformer) -> list[str]:
    """The layers its ``model.yaml`` lists: the patch embedding (chw), each encoder layer's output and
    its first layer's MLP GELU (tokens with the class token), the final LayerNorm and the head last."""
    n = len(net.encoder.layers)
    layers = ["conv_proj", "encoder.layers.encoder_layer_0.mlp.1"]
    layers += [f"encoder.layers.encoder_layer_{k}" for k in range(n)]
    return layers + ["encoder.ln", "heads.head"]
