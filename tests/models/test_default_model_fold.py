"""Folding batch-norm into the convs of the default architecture leaves its outputs unchanged."""
import torch

from dvis.models.fold import fold_batchnorm
from dvis.nets.zf_cifar import zf_cifar10


def test_fold_batchnorm_preserves_outputs() -> None:
    torch.manual_seed(0)
    net = zf_cifar10(batch_norm=True, widths=(8, 8, 16, 16, 8), fc_width=16)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(-2, 2)
            m.bias.data.uniform_(-1, 1)
    net.eval()
    folded = fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x), atol=1e-5, rtol=1e-5)
    plain = zf_cifar10(widths=(8, 8, 16, 16, 8), fc_width=16)
    plain.load_state_dict(folded.state_dict())  # the folded net is exactly the shipped architecture
