"""Horizontal flip: boxes move with the pixels, and randomness comes only from the generator."""

from __future__ import annotations

import torch

from rfcn.data.transforms import Compose, RandomHorizontalFlip, hflip_boxes


def _target(boxes: list[list[float]]) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.ones(len(boxes), dtype=torch.int64),
        "difficult": torch.zeros(len(boxes), dtype=torch.bool),
        "image_id": "x",
    }


def test_hflip_boxes_hand_worked() -> None:
    boxes = torch.tensor([[1.0, 2.0, 4.0, 5.0], [0.0, 0.0, 10.0, 3.0]])
    expected = torch.tensor([[6.0, 2.0, 9.0, 5.0], [0.0, 0.0, 10.0, 3.0]])
    torch.testing.assert_close(hflip_boxes(boxes, 10), expected)
    torch.testing.assert_close(hflip_boxes(hflip_boxes(boxes, 10), 10), boxes)


def test_marked_corner_moves_with_its_box() -> None:
    image = torch.zeros(3, 20, 30)
    box = [5.0, 4.0, 12.0, 10.0]  # pixels x 5..11, y 4..9
    image[:, 4, 5] = 1.0  # the box's top-left pixel
    flipped, target = RandomHorizontalFlip(p=1.0)(image, _target([box]), None)
    x1, y1, x2, y2 = target["boxes"][0].tolist()
    assert (x1, y1, x2, y2) == (18.0, 4.0, 25.0, 10.0)
    marked = torch.nonzero(flipped[0]).tolist()
    assert marked == [[int(y1), int(x2) - 1]]  # now the box's top-right pixel
    assert torch.equal(target["labels"], torch.ones(1, dtype=torch.int64))


def test_no_flip_with_probability_zero_and_empty_boxes() -> None:
    image = torch.rand(3, 4, 5)
    same, target = RandomHorizontalFlip(p=0.0)(image, _target([[0, 0, 1, 1]]), None)
    assert same is image and target["boxes"].tolist() == [[0, 0, 1, 1]]
    _, empty = RandomHorizontalFlip(p=1.0)(image, _target([]), None)
    assert empty["boxes"].shape == (0, 4)


def test_seeded_generator_makes_flips_reproducible_and_balanced() -> None:
    image = torch.arange(6.0).reshape(1, 2, 3)
    flip = Compose([RandomHorizontalFlip(0.5)])

    def decisions(seed: int) -> list[bool]:
        generator = torch.Generator().manual_seed(seed)
        return [not torch.equal(flip(image, _target([]), generator)[0], image) for _ in range(400)]

    first = decisions(3)
    assert first == decisions(3)
    assert first != decisions(4)
    assert 150 < sum(first) < 250  # Binomial(400, 0.5): about 5 standard deviations


def test_compose_applies_in_order() -> None:
    image = torch.zeros(3, 2, 10)
    twice = Compose([RandomHorizontalFlip(1.0), RandomHorizontalFlip(1.0)])
    _, target = twice(image, _target([[1, 0, 3, 2]]), None)
    assert target["boxes"].tolist() == [[1, 0, 3, 2]]
