"""Deformable PS-RoI pooling against a float64 loop of the original operator's arithmetic, a
hand-worked example, gradcheck, torch.compile, ONNX (onnxruntime) and CUDA."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from deform_ps_roi_reference import reference_deform_ps_roi_pool
from roi_cases import assert_each_channel_feeds_only_its_own_output_and_bin, mixed_rois
from torch import Tensor, nn

from rfcn.ops import deform_ps_roi_pool, ps_roi_pool


def _rois(height: int, width: int, stride: int) -> Tensor:
    """The edge cases of :func:`mixed_rois`, and negative half-pixel coordinates (C rounds
    those away from zero: round(-2.5) = -3)."""
    negative_halves = torch.tensor([[1, -2.5, -6.5, 13.5, 7.5]], dtype=torch.float64)
    return torch.cat((mixed_rois(height, width, stride), negative_halves))


def _random(*shape: int, seed: int, scale: float = 1.0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("groups", [None, 1, 2])
@pytest.mark.parametrize(("k", "sampling_ratio"), [(1, 3), (3, 2), (7, 1)])
def test_matches_float64_loop(k: int, sampling_ratio: int, groups: int | None) -> None:
    height, width, stride, num_outputs = 9, 11, 4, 2
    features = _random(2, k * k * num_outputs, height, width, seed=k)
    rois = _rois(height, width, stride)
    offsets = None if groups is None else _random(len(rois), 2 * groups, k, k, seed=7, scale=2.0)
    expected = reference_deform_ps_roi_pool(
        features, rois, offsets, k, 1 / stride, sampling_ratio, trans_std=0.3
    )
    actual = deform_ps_roi_pool(features, rois, offsets, k, 1 / stride, sampling_ratio, 0.3)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    # float32 features, offsets and RoIs give the same samples, to float32 accuracy.
    offsets32 = None if offsets is None else offsets.float()
    actual32 = deform_ps_roi_pool(
        features.float(), rois.float(), offsets32, k, 1 / stride, sampling_ratio, 0.3
    )
    assert actual32.dtype == torch.float32
    torch.testing.assert_close(actual32, expected.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("k", "part_size"), [(3, 2), (3, 5), (4, 1)])
def test_part_size_other_than_k(k: int, part_size: int) -> None:
    """Bin (i, j) reads offset part (floor(i P / k), floor(j P / k))."""
    features = _random(2, k * k * 4, 8, 10, seed=1)
    rois = _rois(8, 10, 4)
    offsets = _random(len(rois), 4, part_size, part_size, seed=2, scale=2.0)
    expected = reference_deform_ps_roi_pool(features, rois, offsets, k, 0.25, 2, 0.2, part_size)
    actual = deform_ps_roi_pool(features, rois, offsets, k, 0.25, 2, 0.2, part_size)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("groups", [1, 3])
def test_no_offsets_equal_zero_offsets(groups: int) -> None:
    features = _random(2, 9 * 6, 7, 9, seed=3)
    rois = _rois(7, 9, 8)
    zeros = torch.zeros(len(rois), 2 * groups, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(
        deform_ps_roi_pool(features, rois, None, 3, 1 / 8),
        deform_ps_roi_pool(features, rois, zeros, 3, 1 / 8),
        rtol=0,
        atol=0,
    )


def test_rois_partly_and_wholly_outside_the_map() -> None:
    """A RoI beyond the map has every sample skipped: 0, and no gradient; one partly outside
    counts only its samples in [-0.5, size - 0.5]."""
    features = _random(1, 9, 6, 6, seed=4).requires_grad_()
    offsets = torch.zeros(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 100.0, 100.0, 130.0, 120.0], [0, -60.0, -60.0, -20.0, -10.0], [0, -6.0, 0, 6.0, 6.0]],
        dtype=torch.float64,
    )
    out = deform_ps_roi_pool(features, rois, offsets, 3, 1.0, sampling_ratio=2)
    assert out[:2].abs().max() == 0
    (out[:2].sum()).backward()
    assert features.grad is not None and features.grad.abs().max() == 0
    assert offsets.grad is not None and offsets.grad.abs().max() == 0
    # Third RoI: x from -6.5 to 5.5, bins 4 wide, samples at -6.5, -4.5 (bin 0: none counted),
    # -2.5, -0.5 (bin 1: -0.5 only, clamped to column 0), 1.5, 3.5 (bin 2: both).
    partly = deform_ps_roi_pool(features.detach(), rois[2:], None, 3, 1.0, sampling_ratio=2)
    assert (partly[0, 0, :, 0] == 0).all() and (partly[0, 0, :, 1:] != 0).all()
    expected = reference_deform_ps_roi_pool(features.detach(), rois[2:], None, 3, 1.0, 2, 0.1)
    torch.testing.assert_close(partly, expected, rtol=1e-12, atol=1e-12)


def test_hand_worked_ramp() -> None:
    # k=1, 2x2 samples, scale 1, map 4y + x on 4x4 (bilinear reads a linear map exactly).
    # RoI (0, 0, 4, 4): start -0.5, size 4, samples at -0.5 (counted, clamped to 0) and 1.5 in
    # each axis: mean of 4y + x over {0, 1.5}^2 = 4 * 0.75 + 0.75 = 3.75.
    # x offset 1 (trans_std 0.1): shift 0.4, x samples -0.1 (clamped to 0) and 1.9: 3.95.
    # x offset 10: shift 4, x samples 3.5 (counted, clamped to 3) and 5.5 (skipped): the bin
    # averages 2 samples, 4 * 0.75 + 3 = 6.
    ramp = torch.arange(16.0).view(1, 1, 4, 4)
    rois = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0]] * 3)
    offsets = torch.tensor([0.0, 1.0, 10.0]).view(3, 1, 1, 1) * torch.tensor([1.0, 0.0]).view(
        1, 2, 1, 1
    )
    out = deform_ps_roi_pool(ramp, rois, offsets, 1, 1.0, sampling_ratio=2, trans_std=0.1)
    torch.testing.assert_close(out.flatten(), torch.tensor([3.75, 3.95, 6.0]))


def test_each_channel_feeds_only_its_own_output_and_bin() -> None:
    assert_each_channel_feeds_only_its_own_output_and_bin(
        lambda features, rois: deform_ps_roi_pool(features, rois, None, 3, 0.5)
    )


def test_offset_groups_shift_only_their_channels() -> None:
    """With G = D, moving group 1's offsets changes output channel 1 only."""
    features = _random(1, 9 * 3, 8, 8, seed=5)
    rois = torch.tensor([[0, 4.0, 4.0, 24.0, 28.0]], dtype=torch.float64)
    offsets = torch.zeros(1, 6, 3, 3, dtype=torch.float64)
    before = deform_ps_roi_pool(features, rois, offsets, 3, 0.25)
    offsets[0, 2:4] = 1.5
    after = deform_ps_roi_pool(features, rois, offsets, 3, 0.25)
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]], rtol=0, atol=0)
    assert (after[:, 1] - before[:, 1]).abs().min() > 0


def test_matches_ps_roi_align_on_a_linear_map_without_offsets() -> None:
    """Cross-check with the independent PS-RoIAlign path: on a map that is linear in x and y,
    bilinear samples read the map exactly, so a bin's mean is the map at its samples' mean. One
    sample at the bin start here (deformable) vs at the bin centre (align): their difference is
    half a bin in each axis, times the slopes."""
    k, height, width = 2, 6, 8
    ys = torch.arange(height, dtype=torch.float64).view(-1, 1)
    xs = torch.arange(width, dtype=torch.float64).view(1, -1)
    features = (3.0 * ys + xs).expand(1, k * k, height, width)
    rois = torch.tensor([[0, 2.0, 1.0, 6.0, 5.0]], dtype=torch.float64)  # bins 2 x 2 cells
    deform = deform_ps_roi_pool(features, rois, None, k, 1.0, sampling_ratio=1)
    align = ps_roi_pool(features, rois, k, 1.0, mode="align", sampling_ratio=1)
    torch.testing.assert_close(deform, align - (3.0 * 1.0 + 1.0), rtol=0, atol=1e-12)


def _gradient_case() -> tuple[Tensor, Tensor, Tensor]:
    features = _random(2, 9 * 4, 7, 9, seed=11)
    rois = torch.tensor(
        [[0, 2.3, 3.1, 19.7, 14.2], [1, -4.4, 6.1, 10.3, 30.6], [1, 0.4, 0.7, 35.2, 26.6]],
        dtype=torch.float64,
    )
    offsets = _random(3, 4, 3, 3, seed=12)
    return features, rois, offsets


def test_gradients_match_the_loop() -> None:
    features, rois, offsets = _gradient_case()
    upstream = _random(3, 4, 3, 3, seed=13)

    def gradients(pool: Callable[..., Tensor]) -> tuple[Tensor, Tensor]:
        leaf_features = features.clone().requires_grad_()
        leaf_offsets = offsets.clone().requires_grad_()
        out = pool(leaf_features, rois, leaf_offsets, 3, 0.25, 2, 0.3)
        (out * upstream).sum().backward()
        assert leaf_features.grad is not None and leaf_offsets.grad is not None
        return leaf_features.grad, leaf_offsets.grad

    actual, expected = gradients(deform_ps_roi_pool), gradients(reference_deform_ps_roi_pool)
    assert expected[1].abs().max() > 0.1  # the offsets do get a gradient
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-10)


def test_gradcheck_features_and_offsets() -> None:
    features, rois, offsets = _gradient_case()
    # Away from the kinks: no sample within 1e-4 of a skip boundary or of a pixel row/column
    # (where the bilinear read is not differentiable), so finite differences are valid.
    samples: list[tuple[float, float]] = []
    reference_deform_ps_roi_pool(features, rois, offsets, 3, 0.25, 2, 0.3, samples=samples)
    kinks = [v - math.floor(v) for point in samples for v in point]
    kinks += [abs(v - 0.5) for v in kinks]
    assert min(min(v, 1 - v) for v in kinks) > 1e-4
    assert torch.autograd.gradcheck(
        lambda x, o: deform_ps_roi_pool(x, rois, o, 3, 0.25, 2, 0.3),
        (features.requires_grad_(), offsets.requires_grad_()),
        eps=1e-6,
        atol=1e-7,
    )


def test_no_rois_gives_empty_output() -> None:
    features = torch.randn(2, 3 * 49, 5, 5, requires_grad=True)
    offsets = torch.zeros(0, 6, 7, 7, requires_grad=True)
    out = deform_ps_roi_pool(features, torch.zeros(0, 5), offsets, 7, 1 / 16)
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert features.grad is not None and features.grad.abs().max() == 0


def test_argument_checks() -> None:
    features = torch.randn(1, 18, 4, 4)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 7.0]])
    with pytest.raises(ValueError, match="features"):
        deform_ps_roi_pool(features, rois, None, 4, 0.5)
    with pytest.raises(ValueError, match="rois"):
        deform_ps_roi_pool(features, rois[:, 1:], None, 3, 0.5)
    with pytest.raises(ValueError, match="sampling_ratio"):
        deform_ps_roi_pool(features, rois, None, 3, 0.5, sampling_ratio=0)
    with pytest.raises(ValueError, match="offsets"):
        deform_ps_roi_pool(features, rois, torch.zeros(1, 2, 2, 2), 3, 0.5)
    with pytest.raises(ValueError, match="offset groups"):
        deform_ps_roi_pool(features, rois, torch.zeros(1, 6, 3, 3), 3, 0.5)


@pytest.mark.slow
def test_torch_compile_matches_eager() -> None:
    features, rois, offsets = (t.float() for t in _gradient_case())
    compiled = torch.compile(deform_ps_roi_pool)

    def run(pool: Callable[..., Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        leaf_features = features.clone().requires_grad_()
        leaf_offsets = offsets.clone().requires_grad_()
        out = pool(leaf_features, rois, leaf_offsets, 3, 0.25, 2, 0.3)
        out.sum().backward()
        assert leaf_features.grad is not None and leaf_offsets.grad is not None
        return out.detach(), leaf_features.grad, leaf_offsets.grad

    torch.testing.assert_close(run(compiled), run(deform_ps_roi_pool), rtol=1e-5, atol=1e-5)


class _Pool(nn.Module):
    def forward(self, features: Tensor, rois: Tensor, offsets: Tensor) -> Tensor:
        return deform_ps_roi_pool(features, rois, offsets, 3, 0.25, 4, 0.1)


@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:# The axis name:UserWarning")
def test_onnx_export_matches_onnxruntime(tmp_path: Path) -> None:
    """The dynamo exporter gives a graph onnxruntime runs, for other map sizes and RoI counts."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    features = _random(2, 36, 8, 9, seed=20).float()
    rois = _rois(8, 9, 4).float()
    offsets = _random(len(rois), 4, 3, 3, seed=21).float()
    dims = {name: torch.export.Dim(name) for name in ("batch", "height", "width", "rois")}
    path = tmp_path / "deform_ps_roi_pool.onnx"
    torch.onnx.export(
        _Pool().eval(),
        (features, rois, offsets),
        path,
        input_names=["features", "rois", "offsets"],
        output_names=["pooled"],
        opset_version=18,
        dynamo=True,
        dynamic_shapes=(
            {0: dims["batch"], 2: dims["height"], 3: dims["width"]},
            {0: dims["rois"]},
            {0: dims["rois"]},
        ),
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other = (
        _random(3, 36, 11, 6, seed=22).float(),
        _rois(11, 6, 4).float()[:4],
        _random(4, 4, 3, 3, seed=23).float(),
    )
    for inputs in ((features, rois, offsets), other):
        names = ("features", "rois", "offsets")
        (pooled,) = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
        torch.testing.assert_close(torch.from_numpy(pooled), _Pool()(*inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    features, rois, offsets = _gradient_case()
    upstream = _random(3, 4, 3, 3, seed=13)

    def run(device: str) -> tuple[Tensor, Tensor, Tensor]:
        leaf_features = features.to(device).requires_grad_()
        leaf_offsets = offsets.to(device).requires_grad_()
        out = deform_ps_roi_pool(leaf_features, rois.to(device), leaf_offsets, 3, 0.25, 2, 0.3)
        (out * upstream.to(device)).sum().backward()
        assert leaf_features.grad is not None and leaf_offsets.grad is not None
        return out.detach().cpu(), leaf_features.grad.cpu(), leaf_offsets.grad.cpu()

    torch.testing.assert_close(run("cuda"), run("cpu"), rtol=1e-10, atol=1e-10)


def test_bfloat16_features_are_read_at_float32_positions() -> None:
    """Samples 60-75 cells into the map, where bf16 steps are a quarter of a cell."""
    features = _random(1, 9 * 2, 80, 80, seed=14).bfloat16().double()
    rois = torch.tensor([[0, 1930.0, 1950.0, 2390.0, 2410.0]], dtype=torch.float64)
    offsets = _random(1, 2, 3, 3, seed=15)
    expected = deform_ps_roi_pool(features, rois, offsets, 3, 1 / 32, 2, 0.3)
    actual = deform_ps_roi_pool(features.bfloat16(), rois, offsets.bfloat16(), 3, 1 / 32, 2, 0.3)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.double(), expected, rtol=0.02, atol=0.02)
