"""Network definitions that ship with dvis."""
from dvis.nets.zf_cifar import zf_cifar10

__all__ = ["zf_cifar10"]
