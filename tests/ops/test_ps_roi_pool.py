"""Position-sensitive RoI pooling against float64 loops, hand-worked numbers, gradcheck, ONNX."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from ps_roi_reference import (
    reference_original_layer,
    reference_ps_roi_align,
    reference_ps_roi_align_max,
    reference_ps_roi_pool,
)
from roi_cases import assert_each_channel_feeds_only_its_own_output_and_bin, mixed_rois
from torch import Tensor

from rfcn.ops import ps_roi_pool, ps_roi_vote
from rfcn.ops.ps_roi_pool import PSRoIPool

# `rfcn.ops.ps_roi_pool` is the function (as torchvision.ops); the module, for monkeypatching:
ps_roi_pool_module = importlib.import_module("rfcn.ops.ps_roi_pool")

MODES = ("pool", "align", "align_max")
ALIGN_REFERENCES = {"align": reference_ps_roi_align, "align_max": reference_ps_roi_align_max}


@pytest.fixture(params=[*MODES, *(f"{mode}-plain" for mode in MODES)])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The mode under test; "-plain" runs the plain operations used while exporting, tracing or
    compiling instead of the eager ``embedding_bag`` path."""
    _run_eagerly(monkeypatch, not request.param.endswith("-plain"))
    return request.param.split("-")[0]


def _run_eagerly(monkeypatch: pytest.MonkeyPatch, eager: bool) -> None:
    monkeypatch.setattr(ps_roi_pool_module, "_eager", lambda: eager)


def _reference(features: Tensor, rois: Tensor, k: int, scale: float, mode: str) -> Tensor:
    if mode == "pool":
        return reference_ps_roi_pool(features, rois, k, scale)
    return ALIGN_REFERENCES[mode](features, rois, k, scale, 2)


@pytest.mark.parametrize("k", [1, 3, 7])
def test_matches_float64_loop(mode: str, k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    height, width, stride = 9, 11, 4
    features = torch.randn(2, k * k * 2, height, width, generator=generator, dtype=torch.float64)
    rois = mixed_rois(height, width, stride)
    expected = _reference(features, rois, k, 1 / stride, mode)
    actual = ps_roi_pool(features, rois, k, 1 / stride, mode)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
    # float32 features (float32 RoIs too) give the same bins, to float32 accuracy.
    actual32 = ps_roi_pool(features.float(), rois.float(), k, 1 / stride, mode)
    assert actual32.dtype == torch.float32
    torch.testing.assert_close(actual32, expected.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ALIGN_REFERENCES)
@pytest.mark.parametrize("eager", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 3])
def test_align_sampling_ratio_matches_loop(
    mode: str, sampling_ratio: int, eager: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run_eagerly(monkeypatch, eager)
    features = torch.randn(2, 18, 7, 8, generator=torch.Generator().manual_seed(5)).double()
    rois = mixed_rois(7, 8, 2)
    expected = ALIGN_REFERENCES[mode](features, rois, 3, 0.5, sampling_ratio)
    actual = ps_roi_pool(features, rois, 3, 0.5, mode, sampling_ratio)
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ALIGN_REFERENCES)
@pytest.mark.parametrize("eager", [False, True])
def test_align_gradients_match_the_loop(
    mode: str, eager: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both bilinear forms back-propagate as autograd through the float64 loop: the average
    to every sample's taps, the maximum to the chosen sample's taps only."""
    _run_eagerly(monkeypatch, eager)
    generator = torch.Generator().manual_seed(21)
    features = torch.randn(2, 18, 7, 8, dtype=torch.float64, generator=generator)
    rois = mixed_rois(7, 8, 4)
    upstream = torch.randn(len(rois), 2, 3, 3, dtype=torch.float64, generator=generator)

    def gradient(pool: Callable[[Tensor], Tensor]) -> Tensor:
        leaf = features.clone().requires_grad_()
        (pool(leaf) * upstream).sum().backward()
        assert leaf.grad is not None
        return leaf.grad

    expected = gradient(lambda x: ALIGN_REFERENCES[mode](x, rois, 3, 0.25, 2))
    actual = gradient(lambda x: ps_roi_pool(x, rois, 3, 0.25, mode))
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("k", "sampling_ratio"), [(1, 1), (3, 2), (7, 2), (3, 3)])
def test_align_matches_torchvision(k: int, sampling_ratio: int, dtype: torch.dtype) -> None:
    """torchvision's compiled ps_roi_align, an independent implementation of the same
    convention, gives the same numbers, forward and backward."""
    features = torch.randn(2, k * k * 3, 9, 11, generator=torch.Generator().manual_seed(k))
    features = features.to(dtype)
    rois = mixed_rois(9, 11, 4).to(dtype)
    upstream = torch.randn(len(rois), 3, k, k, generator=torch.Generator().manual_seed(0))

    def run(pool: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        leaf = features.clone().requires_grad_()
        out = pool(leaf)
        out.backward(upstream.to(dtype))
        assert leaf.grad is not None
        return out.detach(), leaf.grad

    ours = run(lambda x: ps_roi_pool(x, rois, k, 0.25, "align", sampling_ratio))
    theirs = run(lambda x: torchvision.ops.ps_roi_align(x, rois, k, 0.25, sampling_ratio))
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(ours, theirs, rtol=tolerance, atol=tolerance)


def _random_rois(count: int, generator: torch.Generator) -> Tensor:
    """``(count, 5)`` RoIs over two images, some partly off a 9×11 map at stride 4."""
    corners = torch.rand(count, 2, generator=generator) * 40 - 4
    sizes = torch.rand(count, 2, generator=generator) * 30
    image = torch.randint(0, 2, (count, 1), generator=generator).float()
    return torch.cat((image, corners, corners + sizes), dim=1)


@pytest.mark.parametrize("with_gradient", [250, 0])
def test_backward_of_rois_without_gradient_is_skipped_exactly(
    mode: str, with_gradient: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As with OHEM, only some RoIs carry a gradient: the features' gradient equals that of
    pooling those RoIs alone."""
    generator = torch.Generator().manual_seed(12)
    features = torch.randn(2, 27, 9, 11, generator=generator, dtype=torch.float64)
    features.requires_grad_()
    rois = _random_rois(400, generator).double()
    upstream = torch.zeros(400, 3, 3, 3, dtype=torch.float64)
    rows = torch.randperm(400, generator=generator)[:with_gradient]
    upstream[rows] = torch.randn(with_gradient, 3, 3, 3, generator=generator, dtype=torch.float64)
    pooled = ps_roi_pool(features, rois, 3, 0.25, mode)
    (skipping,) = torch.autograd.grad(pooled, features, upstream)
    alone = ps_roi_pool(features, rois[rows], 3, 0.25, mode)
    (expected,) = torch.autograd.grad(alone, features, upstream[rows], allow_unused=True)
    expected = torch.zeros_like(features) if expected is None else expected
    torch.testing.assert_close(skipping, expected, rtol=1e-12, atol=1e-12)
    if with_gradient == 0:
        assert not skipping.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_gradient", [60, 7, 0])
def test_vote_is_the_mean_of_the_pooled_bins_bit_for_bit(
    mode: str, dtype: torch.dtype, with_gradient: int
) -> None:
    """``ps_roi_vote`` is ``ps_roi_pool(...).mean(dim=(2, 3))`` to the last bit, forward and
    backward, whichever RoIs carry a gradient (all, a few as with OHEM, none)."""
    generator = torch.Generator().manual_seed(5)
    features = torch.randn(2, 36, 9, 11, generator=generator).to(dtype).requires_grad_()
    rois = _random_rois(60, generator)
    upstream = torch.zeros(60, 4, dtype=dtype)
    rows = torch.randperm(60, generator=generator)[:with_gradient]
    upstream[rows] = torch.randn(with_gradient, 4, generator=generator).to(dtype)
    averaged = ps_roi_pool(features, rois, 3, 0.25, mode).mean(dim=(2, 3))
    voted = ps_roi_vote(features, rois, 3, 0.25, mode)
    assert torch.equal(voted, averaged)
    (expected,) = torch.autograd.grad(averaged, features, upstream)
    (gradient,) = torch.autograd.grad(voted, features, upstream)
    assert torch.equal(gradient, expected)
    assert gradient.any() == (with_gradient > 0)


def test_pool_equals_original_layer_on_inclusive_boxes() -> None:
    """The original layer took 0-based inclusive ends and added 1; with our exclusive ends
    (x2 = inclusive end + 1) the op computes the same numbers without a +1."""
    features = torch.randn(2, 27, 10, 13, generator=torch.Generator().manual_seed(2))
    rois = torch.tensor(
        [
            [0, 0.0, 0.0, 208.0, 160.0],
            [1, 16.5, 31.5, 80.5, 96.5],  # half-pixel ends round up in both conventions
            [0, 33.2, 7.9, 34.1, 8.6],
            [1, 100.0, 60.0, 300.0, 250.0],
            [0, 47.6, 15.3, 47.6, 15.3],
        ],
        dtype=torch.float64,
    )
    inclusive = rois.clone()
    inclusive[:, 3:] -= 1
    expected = reference_original_layer(features, inclusive, 3, 1 / 16)
    torch.testing.assert_close(ps_roi_pool(features.double(), rois, 3, 1 / 16), expected)


def test_pool_is_accurate_on_a_large_float32_map() -> None:
    """Integral-image sums over a 200×200 map keep float32 accuracy (float64 table)."""
    generator = torch.Generator().manual_seed(3)
    features = 50.0 + torch.randn(1, 49, 200, 200, generator=generator)
    rois = torch.tensor(
        [[0, 1590.0, 1590.0, 1600.0, 1600.0], [0, 0.0, 0.0, 1600.0, 1600.0], [0, 810, 30, 1207, 66]]
    )
    expected = reference_ps_roi_pool(features, rois, 7, 1 / 8)
    actual = ps_roi_pool(features, rois, 7, 1 / 8)
    torch.testing.assert_close(actual.double(), expected, rtol=1e-6, atol=0.0)


def test_gradcheck(mode: str) -> None:
    features = torch.randn(
        2, 8, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    ).requires_grad_()
    rois = torch.tensor(
        [[0, 2.0, 3.0, 17.0, 14.0], [1, -4.0, 6.0, 10.0, 30.0], [1, 0.0, 0.0, 24.0, 20.0]],
        dtype=torch.float64,
    )
    assert torch.autograd.gradcheck(
        lambda x: ps_roi_pool(x, rois, 2, 0.25, mode), (features,), eps=1e-6, atol=1e-8
    )


@pytest.mark.parametrize("mode", MODES)
def test_plain_operations_equal_the_eager_path(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the op is exported, traced or compiled, plain gathers and sums replace
    ``embedding_bag`` and its backward pass: the same numbers, forward and backward."""
    features = torch.randn(
        2, 18, 6, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(11)
    ).requires_grad_()
    rois = mixed_rois(6, 7, 4)
    upstream = torch.randn(len(rois), 2, 3, 3, dtype=torch.float64)

    def pooled_and_gradient() -> tuple[Tensor, Tensor]:
        out = ps_roi_pool(features, rois, 3, 0.25, mode)
        return out.detach(), torch.autograd.grad(out, features, upstream)[0]

    eager = pooled_and_gradient()
    _run_eagerly(monkeypatch, False)
    plain = pooled_and_gradient()
    torch.testing.assert_close(plain, eager, rtol=1e-12, atol=1e-12)


def test_each_channel_feeds_only_its_own_class_and_bin(mode: str) -> None:
    assert_each_channel_feeds_only_its_own_output_and_bin(
        lambda features, rois: ps_roi_pool(features, rois, 3, 0.5, mode)
    )


def test_position_sensitivity(mode: str) -> None:
    """An object part at the RoI's top-left is scored by bin (0, 0); shifted to the bottom-right,
    by bin (k-1, k-1); a top-left part seen only by the bottom-right maps scores nothing."""
    k = 3
    # "align_max" reads pixel p at coordinate p, the others at p + 0.5: the same pixels are
    # inside the RoI when its edges move half a pixel.
    edge = -0.5 if mode == "align_max" else 0.0
    rois = torch.tensor([[0, edge, edge, 9.0 + edge, 9.0 + edge]])

    def blob_at(top: int, left: int, channels: slice) -> Tensor:
        features = torch.zeros(1, k * k, 9, 9)
        features[0, channels, top : top + 3, left : left + 3] = 1.0
        return features

    top_left = ps_roi_pool(blob_at(0, 0, slice(None)), rois, k, 1.0, mode)[0, 0]
    bottom_right = ps_roi_pool(blob_at(6, 6, slice(None)), rois, k, 1.0, mode)[0, 0]
    assert top_left[0, 0] > 0.5 and top_left.sum() == top_left[0, 0]
    assert bottom_right[k - 1, k - 1] > 0.5 and bottom_right.sum() == bottom_right[k - 1, k - 1]
    last_group_only = blob_at(0, 0, slice(k * k - 1, k * k))
    assert ps_roi_pool(last_group_only, rois, k, 1.0, mode).abs().max() == 0


def _ramp_features() -> Tensor:
    """(1, 4, 4, 4): channel ch holds 100*ch + 4*y + x, so bin (i, j) of k=2 reads 100*(2i+j)."""
    ramp = torch.arange(16.0).view(4, 4)
    return torch.stack([100.0 * ch + ramp for ch in range(4)]).unsqueeze(0)


def test_pool_hand_worked_4x4() -> None:
    # k=2, D=1, scale 1. RoI 1: (0.4, 0.6, 3.2, 2.6) rounds to x 0..3, y 1..3 -> w=3, h=2,
    # bin 1.5 wide, 1 high. Rows: i=0 -> floor(1)..ceil(2) = row 1; i=1 -> row 2.
    # Columns: j=0 -> floor(0)..ceil(1.5) = cols 0,1; j=1 -> floor(1.5)..ceil(3) = cols 1,2.
    # bin(0,0) ch0: mean(4, 5) = 4.5;          bin(0,1) ch1: 100 + mean(5, 6) = 105.5;
    # bin(1,0) ch2: 200 + mean(8, 9) = 208.5;  bin(1,1) ch3: 300 + mean(9, 10) = 309.5.
    # RoI 2: (2, 2, 6, 6) -> bins 2 wide; bin(0,0) = rows 2,3 x cols 2,3 of ch0 =
    # mean(10, 11, 14, 15) = 12.5; every other bin starts at row or column 4 = outside -> 0.
    rois = torch.tensor([[0, 0.4, 0.6, 3.2, 2.6], [0, 2.0, 2.0, 6.0, 6.0]])
    out = ps_roi_pool(_ramp_features(), rois, 2, 1.0)
    expected = torch.tensor([[[[4.5, 105.5], [208.5, 309.5]]], [[[12.5, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("eager", [False, True])
def test_align_hand_worked_4x4(eager: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # k=1, sampling_ratio=2, scale 1, channel 0 = 4y + x (bilinear reproduces it exactly).
    # RoI 1: (-2, 0, 2, 4) -> x from -2.5 to 1.5, samples x = -1.5 (outside [-1, 4]: counts 0)
    # and 0.5; y from -0.5 to 3.5, samples 0.5 and 2.5. (2.5 + 10.5 + 0 + 0) / 4 = 3.25.
    # RoI 2: (0, 0, 1, 4) -> x samples -0.25 (clamped to 0) and 0.25; y samples 0.5, 2.5:
    # (2 + 2.25 + 10 + 10.25) / 4 = 6.125.
    _run_eagerly(monkeypatch, eager)
    features = _ramp_features()[:, :1]
    rois = torch.tensor([[0, -2.0, 0.0, 2.0, 4.0], [0, 0.0, 0.0, 1.0, 4.0]])
    out = ps_roi_pool(features, rois, 1, 1.0, "align", sampling_ratio=2)
    torch.testing.assert_close(out.flatten(), torch.tensor([3.25, 6.125]))


@pytest.mark.parametrize("eager", [False, True])
def test_align_max_hand_worked_4x4(eager: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # k=1, sampling_ratio=2, scale 1, channel 0 = 4y + x, no half-pixel offset.
    # RoI 1: (0, 0, 2, 4) -> samples x = 0.5, 1.5 and y = 1, 3: 4.5, 5.5, 12.5, 13.5; max 13.5
    # (the official kernel doubles a sample on a pixel row, giving 27: module docstring).
    # RoI 2: (2, 2, 6, 6) -> samples x, y = 3, 5; (3, 3) reads 15, the others read outside: 15.
    # RoI 2 on -(4y + x): the zeros read outside beat -15: 0.
    _run_eagerly(monkeypatch, eager)
    features = _ramp_features()[:, :1]
    rois = torch.tensor([[0, 0.0, 0.0, 2.0, 4.0], [0, 2.0, 2.0, 6.0, 6.0]])
    out = ps_roi_pool(features, rois, 1, 1.0, "align_max", sampling_ratio=2)
    torch.testing.assert_close(out.flatten(), torch.tensor([13.5, 15.0]))
    negated = ps_roi_pool(-features, rois[1:], 1, 1.0, "align_max", sampling_ratio=2)
    assert negated.flatten().tolist() == [0.0]


def test_no_rois_gives_empty_output(mode: str) -> None:
    features = torch.randn(2, 3 * 49, 5, 5, requires_grad=True)
    out = ps_roi_pool(features, torch.zeros(0, 5), 7, 1 / 16, mode)
    assert out.shape == (0, 3, 7, 7)
    out.sum().backward()
    assert features.grad is not None and features.grad.abs().max() == 0


def test_accepts_channels_last_and_strided_features(mode: str) -> None:
    """Maps in any layout pool and back-propagate alike (training in channels_last feeds the
    pooling NHWC maps: ``train.memory_format``)."""
    features = torch.randn(2, 36, 7, 10, generator=torch.Generator().manual_seed(8))
    rois = mixed_rois(7, 10, 4).float()
    upstream = torch.randn(len(rois), 4, 3, 3, generator=torch.Generator().manual_seed(9))
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        maps = features.clone(memory_format=layout).requires_grad_(True)
        pooled = ps_roi_pool(maps, rois, 3, 0.25, mode)
        (pooled * upstream).sum().backward()
        results.append((pooled.detach(), maps.grad))
    (expected, expected_grad), (channels_last, channels_last_grad) = results
    torch.testing.assert_close(channels_last, expected)
    torch.testing.assert_close(channels_last_grad, expected_grad)
    padded = torch.zeros(2, 36, 7, 13)
    padded[..., 1:11] = features
    torch.testing.assert_close(ps_roi_pool(padded[..., 1:11], rois, 3, 0.25, mode), expected)


def test_module_and_argument_checks() -> None:
    module = PSRoIPool(3, 0.5, mode="align")
    assert "mode='align'" in repr(module)
    features = torch.randn(1, 18, 4, 4)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 7.0]])
    torch.testing.assert_close(module(features, rois), ps_roi_pool(features, rois, 3, 0.5, "align"))
    with pytest.raises(ValueError, match="mode"):
        ps_roi_pool(features, rois, 3, 0.5, mode="max")
    with pytest.raises(ValueError, match="features"):
        ps_roi_pool(features, rois, 4, 0.5)
    with pytest.raises(ValueError, match="rois"):
        ps_roi_pool(features, rois[:, 1:], 3, 0.5)
    with pytest.raises(ValueError, match="sampling_ratio"):
        ps_roi_pool(features, rois, 3, 0.5, "align", sampling_ratio=0)


@pytest.mark.filterwarnings("ignore:.*TorchScript-based ONNX export:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.parametrize("mode", MODES)
def test_onnx_export_matches_onnxruntime(mode: str, dynamo: bool, tmp_path: Path) -> None:
    """Both exporters give a graph that onnxruntime runs, for other map sizes and RoI counts."""
    onnxruntime = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    module = PSRoIPool(3, 0.25, mode=mode).eval()
    generator = torch.Generator().manual_seed(6)
    features = torch.randn(2, 36, 8, 9, generator=generator)
    rois = mixed_rois(8, 9, 4).float()
    path = tmp_path / "ps_roi_pool.onnx"
    if dynamo:
        dims = {name: torch.export.Dim(name) for name in ("batch", "height", "width", "rois")}
        dynamic = {
            "dynamic_shapes": (
                {0: dims["batch"], 2: dims["height"], 3: dims["width"]},
                {0: dims["rois"]},
            )
        }
    else:
        dynamic = {"dynamic_axes": {"features": {0: "B", 2: "H", 3: "W"}, "rois": {0: "K"}}}
    torch.onnx.export(
        module,
        (features, rois),
        path,
        input_names=["features", "rois"],
        output_names=["pooled"],
        opset_version=18 if dynamo else 17,
        dynamo=dynamo,
        **dynamic,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    other_features = torch.randn(3, 36, 11, 6, generator=generator)
    other_rois = mixed_rois(11, 6, 4).float()[:4]
    for feats, boxes in ((features, rois), (other_features, other_rois)):
        (pooled,) = session.run(None, {"features": feats.numpy(), "rois": boxes.numpy()})
        torch.testing.assert_close(
            torch.from_numpy(pooled), module(feats, boxes), rtol=1e-5, atol=1e-5
        )
