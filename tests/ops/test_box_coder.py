import math

import torch

from rfcn.ops.box_coder import BoxCoder


def _random_boxes(count: int, generator: torch.Generator) -> torch.Tensor:
    top_left = torch.rand(count, 2, generator=generator) * 100
    size = torch.rand(count, 2, generator=generator) * 50 + 1
    return torch.cat((top_left, top_left + size), dim=1)


def test_round_trip_recovers_the_targets():
    generator = torch.Generator().manual_seed(0)
    references = _random_boxes(50, generator)
    targets = _random_boxes(50, generator)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    decoded = coder.decode(coder.encode(targets, references), references)
    torch.testing.assert_close(decoded, targets, rtol=1e-5, atol=1e-4)


def test_encode_hand_worked_example():
    reference = torch.tensor([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size 10 x 20
    target = torch.tensor([[2.0, 4.0, 22.0, 24.0]])  # centre (12, 14), size 20 x 20
    deltas = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode(target, reference)
    expected = torch.tensor([[10 * 7 / 10, 10 * 4 / 20, 5 * math.log(2.0), 5 * math.log(1.0)]])
    torch.testing.assert_close(deltas, expected)


def test_decode_broadcasts_middle_dimensions_and_clamps_scale():
    coder = BoxCoder()
    references = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 10.0, 30.0, 50.0]])
    deltas = torch.zeros(2, 3, 4)
    deltas[1, 2] = torch.tensor([0.5, 0.0, 100.0, 0.0])  # huge dw is clamped
    decoded = coder.decode(deltas, references)
    assert decoded.shape == (2, 3, 4)
    torch.testing.assert_close(decoded[0, 1], references[0])
    assert torch.isfinite(decoded).all()
    width = decoded[1, 2, 2] - decoded[1, 2, 0]
    torch.testing.assert_close(width, torch.tensor(20.0 * 1000.0 / 16), rtol=1e-4, atol=0)
    torch.testing.assert_close((decoded[1, 2, 0] + decoded[1, 2, 2]) / 2, torch.tensor(30.0))


def test_decode_half_precision_deltas_gives_reference_precision():
    references = torch.tensor([[1000.0, 1000.0, 1003.0, 1005.0]])
    decoded = BoxCoder().decode(torch.zeros(1, 4, dtype=torch.bfloat16), references)
    assert decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, references)
