"""Inputs and checks shared by the tests of the position-sensitive pooling operators."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def mixed_rois(height: int, width: int, stride: int) -> Tensor:
    """``(10, 5)`` float64 RoIs in image pixels over a (height, width) map of the given stride:
    inside, partly and wholly outside, sub-pixel, huge, inverted, on two batch images."""
    img_h, img_w = height * stride, width * stride
    return torch.tensor(
        [
            [0, 3.3, 5.7, 40.2, 30.9],  # inside
            [1, 0.0, 0.0, img_w, img_h],  # the whole image
            [1, -25.0, -13.4, 20.6, 17.2],  # partly outside, top-left
            [0, img_w - 10.0, img_h - 7.5, img_w + 30.0, img_h + 22.0],  # partly outside
            [1, img_w + 5.0, 2.0, img_w + 60.0, 30.0],  # wholly outside
            [0, 17.2, 9.6, 17.5, 9.8],  # sub-pixel
            [1, 11.0, 12.0, 11.0, 12.0],  # zero size
            [0, 30.0, 20.0, 10.0, 5.0],  # inverted
            [1, -500.0, -400.0, img_w + 700.0, img_h + 300.0],  # huge
            [0, 8.5, 4.5, 24.5, 16.5],  # half-pixel coordinates
        ],
        dtype=torch.float64,
    )


def assert_each_channel_feeds_only_its_own_output_and_bin(
    pool: Callable[[Tensor, Tensor], Tensor],
) -> None:
    """``pool(features (1, 9 * 2, 6, 6), rois (1, 5)) -> (1, 2, 3, 3)`` (k = 3, two outputs,
    scale 1/2) reads channel (d * k + i) * k + j for output d, bin (i, j) and nothing else."""
    k, num_outputs = 3, 2
    rois = torch.tensor([[0, 0.0, 0.0, 12.0, 12.0]])
    for d in range(num_outputs):
        for i in range(k):
            for j in range(k):
                features = torch.zeros(1, k * k * num_outputs, 6, 6)
                features[0, (d * k + i) * k + j] = 1.0
                expected = torch.zeros(num_outputs, k, k)
                expected[d, i, j] = 1.0
                torch.testing.assert_close(pool(features, rois)[0], expected, rtol=0, atol=1e-6)
