import torch

from rfcn.config import ModelConfig
from rfcn.modeling.rfcn import build_model
from rfcn.modeling.transform import RFCNTransform


def _transform(min_size=(60,), max_size=100, divisible=32):
    return RFCNTransform(min_size, max_size, divisible, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_resize_pad_and_normalise():
    transform = _transform().eval()
    images = [torch.full((3, 30, 40), 0.75), torch.full((3, 50, 20), 0.5)]
    batch, _ = transform(images)
    # 30x40 -> shorter side 60: 60x80; 50x20 -> 150x60 capped by max 100: 100x40
    assert batch.image_sizes == [(60, 80), (100, 40)]
    assert batch.original_sizes == [(30, 40), (50, 20)]
    assert batch.tensor.shape == (2, 3, 128, 96)  # padded to multiples of 32
    torch.testing.assert_close(batch.tensor[0, :, :60, :80], torch.full((3, 60, 80), 1.0))
    assert batch.tensor[0, :, 60:].abs().sum() == 0 and batch.tensor[0, :, :, 80:].abs().sum() == 0
    torch.testing.assert_close(batch.tensor[1, :, :100, :40], torch.zeros(3, 100, 40))
    assert batch.scales == [(2.0, 2.0), (2.0, 2.0)]


def test_targets_are_scaled_and_detections_mapped_back():
    transform = _transform().eval()
    image = torch.rand(3, 30, 45)
    boxes = torch.tensor([[3.0, 6.0, 30.0, 27.0]])
    batch, targets = transform([image], [{"boxes": boxes, "labels": torch.tensor([1])}])
    assert batch.image_sizes == [(60, 90)]
    torch.testing.assert_close(targets[0]["boxes"], boxes * 2)
    assert targets[0]["labels"].tolist() == [1]
    back = transform.to_input_pixels([targets[0]["boxes"] + torch.tensor([0, 0, 100, 0])], batch)
    torch.testing.assert_close(back[0], torch.tensor([[3.0, 6.0, 45.0, 27.0]]))  # clipped


def test_training_picks_a_listed_size():
    transform = _transform(min_size=(40, 60, 80), max_size=1000).train()
    seen = {transform([torch.rand(3, 20, 20)])[0].image_sizes[0][0] for _ in range(30)}
    assert seen == {40, 60, 80}
    assert transform.eval()([torch.rand(3, 20, 20)])[0].image_sizes[0] == (80, 80)


def test_padded_size_is_the_shape_the_image_gets_alone():
    transform = _transform(min_size=(40, 60), max_size=100).eval()
    for height, width in [(30, 40), (50, 20), (31, 47), (64, 64), (17, 90)]:
        batch, _ = transform([torch.rand(3, height, width)])
        assert transform.padded_size(height, width) == tuple(batch.tensor.shape[-2:])
    # 30x40 and 31x41 both become 60x80 (60x81): they pad alike; 30x64 (60x100) does not
    assert transform.padded_size(30, 40) == transform.padded_size(31, 41) == (64, 96)
    assert transform.padded_size(30, 64) == (64, 128)


def test_each_channel_has_its_own_statistics_and_the_defaults_are_imagenets():
    config = ModelConfig(backbone="resnet18", backbone_width=8, num_classes=1, k=1,
                         head_channels=8, min_size=(32,), max_size=32)  # fmt: skip
    assert config.image_mean == (0.485, 0.456, 0.406)  # ImageNet RGB, torchvision's order
    assert config.image_std == (0.229, 0.224, 0.225)
    transform = build_model(config).transform  # the statistics as the model gets them
    red, green, blue = 0.7, 0.2, 0.5
    image = torch.tensor([red, green, blue]).view(3, 1, 1).expand(3, 32, 32)
    batch, _ = transform.eval()([image])
    expected = [(red - 0.485) / 0.229, (green - 0.456) / 0.224, (blue - 0.406) / 0.225]
    height, width = batch.image_sizes[0]
    for channel, value in enumerate(expected):
        torch.testing.assert_close(
            batch.tensor[0, channel, :height, :width], torch.full((height, width), value)
        )
