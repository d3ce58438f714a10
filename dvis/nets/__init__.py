"""Network definitions that ship with dvis (plain ``nn.Module`` factories named in model.yaml as
``dvis.nets.<module>:<factory>``), each with the function listing the layers its model.yaml shows."""
from dvis.nets.convnext_cifar import convnext_cifar, convnext_cifar_layers
from dvis.nets.resnet_cifar import resnet_cifar, resnet_cifar_layers
from dvis.nets.vit_cifar import vit_cifar, vit_cifar_layers
from dvis.nets.zf_cifar import zf_cifar10, zf_cifar10_layers

__all__ = [
    "convnext_cifar", "convnext_cifar_layers", "resnet_cifar", "resnet_cifar_layers",
    "vit_cifar", "vit_cifar_layers", "zf_cifar10", "zf_cifar10_layers",
]
