import math

import torch

from rfcn.modeling.anchors import AnchorGenerator, cell_anchors


def test_cell_anchors_areas_and_ratios():
    sizes, ratios = (128.0, 256.0, 512.0), (0.5, 1.0, 2.0)
    cell = cell_anchors(sizes, ratios)
    assert cell.shape == (9, 4)
    widths = cell[:, 2] - cell[:, 0]
    heights = cell[:, 3] - cell[:, 1]
    expected_areas = torch.tensor([s * s for _ in ratios for s in sizes])
    torch.testing.assert_close(widths * heights, expected_areas)
    expected_ratios = torch.tensor([r for r in ratios for _ in sizes])
    torch.testing.assert_close(heights / widths, expected_ratios)
    torch.testing.assert_close(cell[:, :2] + cell[:, 2:], torch.zeros(9, 2))  # centred on 0


def test_grid_counts_order_and_centres():
    generator = AnchorGenerator((128.0, 256.0, 512.0), (0.5, 1.0, 2.0), stride=16)
    assert generator.num_anchors == 9
    anchors = generator(3, 5)
    assert anchors.shape == (3 * 5 * 9, 4)
    grid = anchors.view(3, 5, 9, 4)  # order (y, x, a)
    centres = (grid[..., :2] + grid[..., 2:]) / 2
    y, x = 2, 4
    torch.testing.assert_close(centres[y, x], torch.tensor([[(x + 0.5) * 16, (y + 0.5) * 16]] * 9))
    torch.testing.assert_close(grid[1, 3] - grid[0, 0], torch.tensor([[48.0, 16.0] * 2] * 9))
    side = grid[0, 0, 4, 2] - grid[0, 0, 4, 0]  # ratio 1, size 256
    assert math.isclose(side.item(), 256.0)
