"""ImageNet weights through torchvision's weights API, served from a local ``file://`` URL:
the tests never touch the network."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch
from torchvision.models import ResNet18_Weights, ResNet50_Weights, resnet18

from rfcn.errors import UserError
from rfcn.modeling import pretrained
from rfcn.modeling.backbone import build_backbone

WEIGHTS = ResNet18_Weights.IMAGENET1K_V1


class Server:
    """A folder standing in for download.pytorch.org, and a count of downloads."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        self.folder.mkdir()
        self.monkeypatch = monkeypatch
        self.downloads = 0
        download = torch.hub.download_url_to_file

        def counted(*args: object, **kwargs: object) -> None:
            self.downloads += 1
            download(*args, **kwargs)

        monkeypatch.setattr(torch.hub, "download_url_to_file", counted)

    def serve(self, content: bytes, hash_prefix: str | None = None) -> Path:
        """Publish ``content`` as torchvision names its files (``resnet18-<sha256[:8]>.pth``;
        ``hash_prefix`` names it wrongly) and point the weights' URL at it."""
        prefix = hash_prefix or hashlib.sha256(content).hexdigest()[:8]
        path = self.folder / f"resnet18-{prefix}.pth"
        path.write_bytes(content)
        self.monkeypatch.setattr(WEIGHTS.value, "url", path.as_uri())
        return path


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv(pretrained.OFFLINE_VARIABLE, raising=False)
    return Server(tmp_path / "served", monkeypatch)


@pytest.fixture(scope="module")
def reference() -> tuple[torch.nn.Module, bytes]:
    """A ResNet-18 and its state dict as a file's bytes (what the server publishes)."""
    torch.manual_seed(0)
    net = resnet18()
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return net, buffer.getvalue()


def test_cache_path_is_torch_hubs(server: Server, tmp_path: Path) -> None:
    server.serve(b"x")
    expected = tmp_path / "torch_home" / "hub" / "checkpoints" / Path(WEIGHTS.url).name
    assert pretrained.cache_path(WEIGHTS) == expected


def test_download_fills_the_cache_then_the_cache_is_used(
    server: Server,
    reference: tuple[torch.nn.Module, bytes],
    capsys: pytest.CaptureFixture[str],
) -> None:
    net, content = reference
    served = server.serve(content)
    backbone = build_backbone("resnet18", pretrained="imagenet", freeze_at=0)
    cached = pretrained.cache_path(WEIGHTS)
    assert server.downloads == 1
    assert cached.read_bytes() == content and cached.name == served.name
    assert "100%" in capsys.readouterr().err  # the progress bar
    torch.testing.assert_close(backbone.trunk[0].weight, net.conv1.weight)
    torch.testing.assert_close(backbone.conv5[1].conv2.weight, net.layer4[1].conv2.weight)
    served.unlink()  # a second build must not need the server
    again = build_backbone("resnet18", pretrained="imagenet", freeze_at=0)
    assert server.downloads == 1
    torch.testing.assert_close(again.trunk[0].weight, net.conv1.weight)


def test_offline_refuses_to_download_and_says_where_the_file_goes(
    server: Server, reference: tuple[torch.nn.Module, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    server.serve(reference[1])
    monkeypatch.setenv(pretrained.OFFLINE_VARIABLE, "1")
    with pytest.raises(UserError) as error:
        build_backbone("resnet18", pretrained="imagenet")
    message = str(error.value)
    assert error.value.source == "model.pretrained" and len(message.splitlines()) == 1
    assert "ResNet18_Weights.IMAGENET1K_V1" in message and "RFCN_OFFLINE=1" in message
    assert f"put {WEIGHTS.url} at {pretrained.cache_path(WEIGHTS)}" in message
    assert "model.pretrained=/path/to/weights.pth" in message
    assert server.downloads == 0 and not pretrained.cache_path(WEIGHTS).exists()


def test_offline_still_reads_the_cache(
    server: Server, reference: tuple[torch.nn.Module, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    net, content = reference
    server.serve(content)
    cached = pretrained.cache_path(WEIGHTS)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(content)
    monkeypatch.setenv(pretrained.OFFLINE_VARIABLE, "1")
    backbone = build_backbone("resnet18", pretrained="imagenet")
    torch.testing.assert_close(backbone.trunk[0].weight, net.conv1.weight)
    assert server.downloads == 0


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("true", True), ("0", False)])
def test_offline_switch_values(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv(pretrained.OFFLINE_VARIABLE, value)
    assert pretrained.offline() is expected


def test_a_corrupt_cached_file_is_named_with_the_way_out(
    server: Server, reference: tuple[torch.nn.Module, bytes]
) -> None:
    server.serve(reference[1])
    cached = pretrained.cache_path(WEIGHTS)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(reference[1][:1000])  # a download cut short by hand
    with pytest.raises(UserError) as error:
        build_backbone("resnet18", pretrained="imagenet")
    assert error.value.source == str(cached) and len(str(error.value).splitlines()) == 1
    assert "cannot be read" in error.value.problem and "delete it" in error.value.problem
    assert server.downloads == 0


def test_a_hash_mismatch_leaves_nothing_in_the_cache(
    server: Server, reference: tuple[torch.nn.Module, bytes]
) -> None:
    server.serve(reference[1], hash_prefix="00000000")
    with pytest.raises(UserError) as error:
        build_backbone("resnet18", pretrained="imagenet")
    problem = error.value.problem
    assert error.value.source == "model.pretrained" and "invalid hash value" in problem
    assert f"put the file at {pretrained.cache_path(WEIGHTS)}" in problem
    assert server.downloads == 1
    assert list(pretrained.cache_path(WEIGHTS).parent.iterdir()) == []


def test_a_failed_download_is_one_line(server: Server) -> None:
    server.serve(b"gone").unlink()  # the URL now names no file, as a 404 would
    with pytest.raises(UserError) as error:
        build_backbone("resnet18", pretrained="imagenet")
    assert error.value.problem.startswith(f"cannot download torchvision's {WEIGHTS!r}")
    assert len(str(error.value).splitlines()) == 1


def test_v1_is_preferred_unless_only_another_variant_is_cached(server: Server) -> None:
    v1, v2 = ResNet50_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2
    choose = pretrained._preferred_imagenet_weights
    assert choose(ResNet50_Weights) is v1
    pretrained.cache_path(v2).parent.mkdir(parents=True)
    pretrained.cache_path(v2).touch()
    assert choose(ResNet50_Weights) is v2
    pretrained.cache_path(v1).touch()
    assert choose(ResNet50_Weights) is v1
