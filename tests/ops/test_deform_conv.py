"""The pure-PyTorch deformable convolution equals torchvision's kernel (values and gradients)
and runs in onnxruntime after export."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor, nn

from rfcn.ops.deform_conv import deform_conv2d, deform_conv2d_decomposed

# (batch, channels, height, width, out_channels, kernel, stride, padding, dilation,
#  offset groups, conv groups, modulated)
CASES = [
    (2, 8, 9, 11, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2, 1, False),
    (2, 8, 9, 11, 6, (3, 3), (1, 1), (2, 2), (2, 2), 4, 2, True),
    (1, 4, 7, 6, 4, (3, 2), (2, 1), (1, 0), (1, 2), 1, 1, True),
    (1, 3, 1, 1, 2, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False),
]


def _inputs(case: tuple) -> dict[str, object]:
    batch, channels, height, width, out, kernel, stride, pad, dil, offset_groups, groups, v2 = case
    generator = torch.Generator().manual_seed(sum(kernel) + channels)
    out_h = (height + 2 * pad[0] - dil[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    out_w = (width + 2 * pad[1] - dil[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    taps = kernel[0] * kernel[1]

    def random(*shape: int, scale: float = 1.0) -> Tensor:
        return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)

    return {
        "input": random(batch, channels, height, width),
        # Offsets of a few pixels: many taps leave the map, where corners read 0.
        "offset": random(batch, 2 * offset_groups * taps, out_h, out_w, scale=3.0),
        "weight": random(out, channels // groups, *kernel),
        "bias": random(out),
        "stride": stride,
        "padding": pad,
        "dilation": dil,
        "mask": torch.rand(batch, offset_groups * taps, out_h, out_w, generator=generator).double()
        if v2
        else None,
    }


@pytest.mark.parametrize("case", CASES)
def test_decomposition_equals_torchvision(case: tuple) -> None:
    inputs = _inputs(case)
    expected = torchvision.ops.deform_conv2d(**inputs)
    torch.testing.assert_close(deform_conv2d_decomposed(**inputs), expected, rtol=1e-12, atol=1e-12)
    inputs32 = {k: v.float() if isinstance(v, Tensor) else v for k, v in inputs.items()}
    torch.testing.assert_close(
        deform_conv2d_decomposed(**inputs32), expected.float(), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("case", CASES[:3])
def test_decomposition_gradients_equal_torchvision(case: tuple) -> None:
    """Offsets of random size never put a tap exactly on the -1 / size band edge, the one place
    where the two take different one-sided derivatives (see rfcn.ops.deform_conv)."""
    inputs = _inputs(case)
    leaves = [
        name for name in ("input", "offset", "weight", "bias", "mask") if inputs[name] is not None
    ]

    def gradients(convolution: Callable[..., Tensor]) -> list[Tensor]:
        given = {**inputs, **{name: inputs[name].clone().requires_grad_() for name in leaves}}
        output = convolution(**given)
        upstream = torch.randn(
            output.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
        )
        (output * upstream).sum().backward()
        return [given[name].grad for name in leaves]

    expected = gradients(torchvision.ops.deform_conv2d)
    assert expected[1].abs().max() > 0.1  # the offsets do get a gradient
    torch.testing.assert_close(
        gradients(deform_conv2d_decomposed), expected, rtol=1e-10, atol=1e-10
    )


def test_zero_offsets_and_unit_masks_are_a_plain_convolution() -> None:
    inputs = _inputs(CASES[1])
    inputs["offset"] = torch.zeros_like(inputs["offset"])
    inputs["mask"] = torch.ones_like(inputs["mask"])
    expected = nn.functional.conv2d(
        inputs["input"], inputs["weight"], inputs["bias"], (1, 1), (2, 2), (2, 2), groups=2
    )
    torch.testing.assert_close(deform_conv2d(**inputs), expected)
    torch.testing.assert_close(deform_conv2d_decomposed(**inputs), expected)


class _DeformConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(
            torch.randn(6, 8, 3, 3, generator=torch.Generator().manual_seed(1))
        )
        self.offset_conv = nn.Conv2d(8, 3 * 2 * 9, 3, padding=2, dilation=2)

    def forward(self, x: Tensor, convolution: Callable[..., Tensor] = deform_conv2d) -> Tensor:
        offset, mask = self.offset_conv(x).split([2 * 2 * 9, 2 * 9], dim=1)
        return convolution(x, offset, self.weight, None, (1, 1), (2, 2), (2, 2), mask.sigmoid())


@pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning")
def test_onnx_export_runs_the_decomposition_in_onnxruntime(tmp_path: Path) -> None:
    """torchvision's op has no ONNX form; while exporting, the decomposition takes its place,
    and onnxruntime reproduces torchvision's output at other sizes too."""
    onnxruntime = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    module = _DeformConv().eval()
    with torch.no_grad():
        module.offset_conv.weight.mul_(10.0)  # offsets of a few pixels
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(1, 8, 10, 12, generator=generator)
    path = tmp_path / "deform_conv.onnx"
    dims = {2: torch.export.Dim("height", min=3), 3: torch.export.Dim("width", min=3)}
    torch.onnx.export(
        module, (x,), path, input_names=["x"], dynamo=True, opset_version=18, dynamic_shapes=(dims,)
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for image in (x, torch.randn(1, 8, 7, 15, generator=generator)):
        (actual,) = session.run(None, {"x": image.numpy()})
        with torch.no_grad():
            expected = module(image, torchvision.ops.deform_conv2d)
        torch.testing.assert_close(torch.from_numpy(actual), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_runs_torchvision_and_matches_the_cpu() -> None:
    inputs = _inputs(CASES[1])
    on_cuda = {k: v.cuda() if isinstance(v, Tensor) else v for k, v in inputs.items()}
    expected = deform_conv2d_decomposed(**inputs)
    torch.testing.assert_close(deform_conv2d(**on_cuda).cpu(), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(
        deform_conv2d_decomposed(**on_cuda).cpu(), expected, rtol=1e-10, atol=1e-10
    )


def test_bfloat16_inputs_sample_at_float32_positions() -> None:
    """In bf16 a position of 37.7 would be read at 37.75; the taps are placed in float32."""
    inputs = _inputs(CASES[0])
    rounded = {k: v.bfloat16().double() if isinstance(v, Tensor) else v for k, v in inputs.items()}
    rounded["offset"] = rounded["offset"] + 30.0  # far from 0, where bf16 steps are coarse
    expected = deform_conv2d_decomposed(**rounded)
    low = {k: v.bfloat16() if isinstance(v, Tensor) else v for k, v in rounded.items()}
    actual = deform_conv2d_decomposed(**low)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.double(), expected, rtol=0, atol=0.02 * expected.abs().max())
