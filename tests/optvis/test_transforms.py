"""Transformation robustness: one batched resampling, the same per image as alone."""
from __future__ import annotations

import torch

from dvis.optvis.transforms import Robustness, Views, apply_views, draw_views, views_for

ROBUST = Robustness(jitter=0.1, scale=(0.8, 1.2), rotate=20, crop=(0.5, 0.9), views=3, noise=0.05)


def test_batched_views_equal_each_image_alone():
    x = torch.rand(4, 3, 12, 17)
    per_seed = [draw_views(ROBUST, 3, (12, 17), torch.Generator().manual_seed(s)) for s in range(2)]
    seeds = torch.tensor([0, 1, 0, 1])
    views = views_for(per_seed, seeds)
    batched = apply_views(x, views, (12, 17))
    assert batched.shape == (12, 3, 12, 17)
    for b in range(4):
        alone = apply_views(x[b:b + 1], Views(per_seed[seeds[b]].theta, per_seed[seeds[b]].noise), (12, 17))
        torch.testing.assert_close(batched[3 * b:3 * b + 3], alone, atol=1e-6, rtol=0)
    # Images of one seed see the same transformations.
    torch.testing.assert_close(views.theta[0:3], views.theta[6:9])


def test_no_transformation_is_the_identity_and_draws_repeat():
    x = torch.rand(2, 1, 9, 14)
    still = draw_views(Robustness(), 1, (9, 14), torch.Generator().manual_seed(0))
    torch.testing.assert_close(apply_views(x, views_for([still], torch.tensor([0, 0])), (9, 14)), x,
                               atol=1e-5, rtol=0)
    a = draw_views(ROBUST, 3, (8, 8), torch.Generator().manual_seed(3))
    b = draw_views(ROBUST, 3, (8, 8), torch.Generator().manual_seed(3))
    assert torch.equal(a.theta, b.theta) and torch.equal(a.noise, b.noise)


def test_views_resample_to_the_net_input_size():
    x = torch.rand(2, 3, 32, 32)
    v = views_for([draw_views(ROBUST, 3, (16, 16), torch.Generator().manual_seed(0))], torch.tensor([0, 0]))
    assert apply_views(x, v, (16, 16)).shape == (6, 3, 16, 16)


def test_rotation_keeps_pixel_units_on_non_square_images():
    # A 90-degree rotation of a wide image's centre square maps columns to rows.
    r = Robustness(rotate=90)
    v = draw_views(r, 1, (8, 16), torch.Generator().manual_seed(0))
    a = v.theta[0, :, :2]
    angle = torch.atan2(a[1, 0] * 8 / 16, a[0, 0])  # undo the aspect correction
    torch.testing.assert_close(a[0, 1], -torch.sin(angle) * 8 / 16)
