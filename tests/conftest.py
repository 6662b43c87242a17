"""Test-wide setup: pytest puts this folder on ``sys.path`` (it holds a conftest), so helpers
shared by tests in several folders (:mod:`process_group`) import as top-level modules."""

import pytest
from overfit import Overfit, overfit, overfit_config, write_voc_image


@pytest.fixture(scope="session")
def overfit_square(tmp_path_factory: pytest.TempPathFactory) -> Overfit:
    """The tiny R-FCN of :mod:`overfit`, trained once per session on its one image, whose VOC
    test split it configures (about a second)."""
    root = write_voc_image(tmp_path_factory.mktemp("overfit") / "voc")
    return overfit(overfit_config(root))
