"""A field cannot shrink with depth: where a global operation (attention, shifted windows) makes a
position see the whole input, its field is the input, at every stride (swin_t's status line gave
444, 440, 432, 416 px over its stages, ViT 432 at 224: 2 * side - stride). Checked against the
gradient-support reference on small torchvision Swin and ViT nets."""
from functools import partial

import pytest
import torch
from torchvision.models.swin_transformer import SwinTransformer

from dvis.engine.geometry import model_geometry
from dvis.nets.vit_cifar import vit_cifar
from helpers.geometry_reference import support_box

SIZE = (32, 32)


def _swin() -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[2, 2], embed_dim=8, depths=[1, 2, 1], num_heads=[1, 1, 1],
                           window_size=[2, 2], norm_layer=partial(torch.nn.LayerNorm, eps=1e-5)).eval()


@pytest.mark.parametrize("make, stages", [
    (_swin, ["features.0", "features.1", "features.3", "features.5"]),
    (lambda: vit_cifar(num_layers=2, num_heads=1, hidden_dim=8, mlp_dim=8).eval(),
     ["conv_proj", "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"]),
])
def test_fields_grow_to_the_input_and_match_the_gradient_support(make, stages):
    net = make()
    geo = model_geometry(net, SIZE)
    sizes = [geo[name].rf.size for name in stages]
    assert sizes == sorted(sizes) and sizes[-1] == SIZE  # never shrinking, the whole input at the end
    for name in stages:
        g = geo[name]
        as_maps = (lambda t, g=g: t[:, 1:].transpose(1, 2).reshape(1, -1, *g.grid)) if g.layout == "tokens" else \
            (lambda t: t.permute(0, 3, 1, 2)) if g.layout == "hwc" else None
        for y, x in [(0, 0), (g.grid[0] // 2, g.grid[1] // 2), (g.grid[0] - 1, 1)]:
            top, left, bottom, right = support_box(net, name, SIZE, y, x, as_maps)
            t, l_, b, r = g.rf.box(y, x)
            assert t <= top and l_ <= left and b >= bottom and r >= right, (name, y, x)  # the box holds the support
            if g.global_context:  # one field for all positions, the input (roll's wrap-around: a bound)
                assert (t, l_, b, r) == (0, 0) + SIZE and g.rf.window == g.grid
            if "attention" in g.reason:  # attention over all tokens: the whole input, as measured
                assert (top, left, bottom, right) == (0, 0) + SIZE
