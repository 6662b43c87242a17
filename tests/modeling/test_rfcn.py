import pytest
import torch
from overfit import LABEL, Overfit

from rfcn.config import ModelConfig
from rfcn.engine.stages import parameter_group
from rfcn.modeling.rfcn import build_model
from rfcn.ops.boxes import box_iou

NUM_CLASSES = 3


def _tiny_config(**overrides) -> ModelConfig:
    settings = {
        "backbone": "resnet18",
        "num_classes": NUM_CLASSES,
        "k": 3,
        "head_channels": 32,
        "min_size": (128,),
        "max_size": 192,
        "rpn_pre_nms_train": 300,
        "rpn_post_nms_train": 100,
        "rpn_pre_nms_test": 200,
        "rpn_post_nms_test": 50,
        "ohem_batch_per_image": 16,
        "roi_batch_per_image": 16,
        "anchor_sizes": (32.0, 64.0, 128.0),
    } | overrides
    return ModelConfig(**settings)


def _images_and_targets():
    generator = torch.Generator().manual_seed(0)
    images = [
        torch.rand(3, 120, 160, generator=generator),
        torch.rand(3, 96, 80, generator=generator),
    ]
    targets = [
        {
            "boxes": torch.tensor([[10.0, 20.0, 80.0, 90.0], [50.0, 50.0, 150.0, 110.0]]),
            "labels": torch.tensor([1, 3]),
        },
        {"boxes": torch.tensor([[5.0, 5.0, 60.0, 40.0]]), "labels": torch.tensor([2])},
    ]
    return images, targets


@pytest.mark.parametrize(
    ("box_mode", "ohem"), [("agnostic", True), ("agnostic8", False), ("class", True)]
)
def test_one_training_step_gives_finite_losses_and_gradients(box_mode, ohem):
    torch.manual_seed(0)
    model = build_model(_tiny_config(box_mode=box_mode, ohem=ohem)).train()
    images, targets = _images_and_targets()
    losses = model(images, targets)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    assert losses["loss_cls"].item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), rel=0.1)
    sum(losses.values()).backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    for name, parameter in trainable:
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name


def test_train_parts_select_the_losses():
    torch.manual_seed(0)
    model = build_model(_tiny_config()).train()
    images, targets = _images_and_targets()
    model.train_parts = ("rpn",)
    assert set(model(images, targets)) == {"loss_rpn_cls", "loss_rpn_box"}
    model.train_parts = ("head",)
    proposals = [t["boxes"] + 2.0 for t in targets]
    losses = model(images, targets, proposals=proposals)
    assert set(losses) == {"loss_cls", "loss_box"}
    sum(losses.values()).backward()
    assert all(p.grad is None for p in model.rpn.parameters())
    with pytest.raises(
        ValueError, match=r"non-empty subset of \('rpn', 'head'\), got \('rpn', 'box'\)"
    ):
        model.train_parts = ("rpn", "box")
    with pytest.raises(ValueError, match="training needs targets"):
        model(images)


def test_training_without_objects():
    torch.manual_seed(0)
    model = build_model(_tiny_config()).train()
    images, _ = _images_and_targets()
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    losses = model(images, [empty, empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_box"].item() == 0.0 and losses["loss_rpn_box"].item() == 0.0


def test_eval_outputs_for_a_batch_of_different_sizes():
    torch.manual_seed(0)
    model = build_model(_tiny_config(score_thresh=0.0)).eval()
    images, _ = _images_and_targets()
    with torch.no_grad():
        detections = model(images)
    assert len(detections) == 2
    for detection, image in zip(detections, images, strict=True):
        assert set(detection) == {"boxes", "labels", "scores"}
        count = detection["boxes"].shape[0]
        assert 0 < count <= 100
        assert detection["boxes"].shape == (count, 4) and detection["boxes"].dtype == torch.float32
        assert detection["labels"].dtype == torch.int64 and detection["scores"].shape == (count,)
        assert detection["labels"].min() >= 1 and detection["labels"].max() <= NUM_CLASSES
        assert (detection["scores"][:-1] >= detection["scores"][1:]).all()
        height, width = image.shape[1:]
        boxes = detection["boxes"]
        assert boxes.min() >= 0 and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()


def test_inference_mode_channels_last_and_given_proposals_agree():
    torch.manual_seed(0)
    model = build_model(_tiny_config(score_thresh=0.0)).eval()
    images, _ = _images_and_targets()
    proposals = model.propose(images)
    assert [p.shape[1] for p in proposals] == [4, 4]
    assert all(0 < p.shape[0] <= 50 for p in proposals)
    assert len(model.propose(images, num_proposals=5)[0]) == 5
    with torch.no_grad():
        reference = model(images, proposals=proposals)
    with torch.inference_mode():
        plain = model(images)
        channels_last = model.to(memory_format=torch.channels_last)(images)
    for a, b, c in zip(reference, plain, channels_last, strict=True):
        torch.testing.assert_close(a["boxes"], b["boxes"], atol=1e-3, rtol=1e-4)
        torch.testing.assert_close(a["scores"], c["scores"], atol=1e-5, rtol=1e-4)
        assert torch.equal(a["labels"], b["labels"])


@pytest.mark.parametrize("head", ["rfcn", "c4"])
def test_box_refinement_adds_the_predictions_on_the_regressed_boxes(head):
    """Built by hand from the plain model: with one class, no NMS and every score kept, the
    refining model's detections are the plain detections on the proposals together with the
    plain detections on each proposal's regressed box."""
    torch.manual_seed(0)
    settings = {"num_classes": 1, "min_size": (96,), "max_size": 96, "score_thresh": 0.0,
                "nms_thresh": 1.0, "detections_per_img": 1000, "head": head,
                "box_mode": "class" if head == "c4" else "agnostic"}  # fmt: skip
    plain = build_model(_tiny_config(**settings)).eval()
    refining = build_model(_tiny_config(**settings, box_refinement=True)).eval()
    refining.load_state_dict(plain.state_dict())
    image = torch.rand(3, 96, 96, generator=torch.Generator().manual_seed(1))
    proposals = torch.tensor([[10.0, 10.0, 50.0, 60.0], [30.0, 20.0, 90.0, 70.0], [5, 40, 40, 90]])
    with torch.no_grad():
        first = plain([image], proposals=[proposals])[0]
        regressed = torch.cat(
            [plain([image], proposals=[box[None]])[0]["boxes"] for box in proposals]
        )
        second = plain([image], proposals=[regressed])[0]
        refined = refining([image], proposals=[proposals])[0]
    assert regressed.shape == (3, 4) and not torch.allclose(regressed, proposals)
    scores, order = torch.cat((first["scores"], second["scores"])).sort(descending=True)
    boxes = torch.cat((first["boxes"], second["boxes"]))[order]
    assert refined["boxes"].shape == (6, 4)
    torch.testing.assert_close(refined["scores"], scores)
    torch.testing.assert_close(refined["boxes"], boxes)


def test_score_maps_for_visualisation():
    model = build_model(_tiny_config()).eval()
    maps = model.score_maps(torch.rand(3, 100, 150))
    # 100x150 -> 128x192 at stride 16: 8 x 12 cells; k²(C+1) = 9 * 4 channels
    assert maps["cls_maps"].shape == (36, 8, 12)
    assert maps["stride"] == 16
    assert maps["scale"] == pytest.approx(1.28)


@pytest.mark.parametrize(("box_mode", "box_channels"), [("agnostic", 196), ("agnostic8", 392)])
def test_paper_model_resnet101_k7_21_classes(box_mode, box_channels):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_model(
            ModelConfig(backbone="resnet101", num_classes=20, k=7, box_mode=box_mode)
        )
    assert model.head.cls_conv.out_channels == 1029  # 7 * 7 * 21
    assert model.head.box_conv.out_channels == box_channels
    count = sum(p.numel() for p in model.parameters())
    print(f"R-FCN ResNet-101 k=7 21 classes {box_mode}: {count:,} parameters")
    assert count == {"agnostic": 50_490_806, "agnostic8": 50_691_706}[box_mode]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_and_eval():
    torch.manual_seed(0)
    model = build_model(_tiny_config()).cuda().train()
    images, targets = _images_and_targets()
    images = [i.cuda() for i in images]
    targets = [{k: v.cuda() for k, v in t.items()} for t in targets]
    losses = model(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.inference_mode():
        detections = model.eval()(images)
    assert detections[0]["boxes"].is_cuda


def test_eval_under_bfloat16_autocast_returns_float32():
    torch.manual_seed(0)
    model = build_model(_tiny_config()).eval()
    images, _ = _images_and_targets()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        detections = model(images)
    assert all(d["boxes"].dtype == d["scores"].dtype == torch.float32 for d in detections)


def test_stage_widths_blocks_and_rpn_width_reach_the_model():
    torch.manual_seed(0)
    model = build_model(
        _tiny_config(
            backbone_width=8,
            stage_channels=(8, 16, 32, 24),
            stage_blocks=(1, 1, 2, 1),
            rpn_channels=16,
        )
    )
    assert len(model.backbone.trunk[6]) == 2 and len(model.backbone.conv5) == 1
    assert model.backbone.conv4_channels == 32 and model.rpn.head.conv.in_channels == 32
    assert model.backbone.conv5_channels == 24 and model.head.reduce.in_channels == 24
    assert model.rpn.head.conv.out_channels == 16
    images, targets = _images_and_targets()
    losses = model.train()(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_stride_32_model_without_atrous():
    torch.manual_seed(0)
    model = build_model(_tiny_config(atrous=False, score_thresh=0.0))
    assert model.backbone.stride == 32 and model.head.spatial_scale == 1 / 32
    images, targets = _images_and_targets()
    losses = model.train()(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        assert len(model.eval()(images)[1]["boxes"]) > 0


def test_deformable_model_trains_and_detects():
    """Deformable PS-RoI pooling and v2 deformable conv5 (offsets and masks); v1 trains in
    tests/engine/test_trainer.py."""
    torch.manual_seed(0)
    model = build_model(_tiny_config(deformable_psroi=True, deformable_conv5="v2")).train()
    images, targets = _images_and_targets()
    losses = model(images, targets)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            assert parameter.grad is not None, name
    offsets = model.offset_parameters()
    assert len(offsets) == 2 * (2 + 4)  # weight and bias of 2 head and 4 conv5 offset convs
    assert all(parameter.grad.abs().sum() > 0 for parameter in offsets[::2])
    # Offset convs belong to the head's training group (alternating steps 2 and 4).
    names = {id(p): n for n, p in model.named_parameters()}
    assert {parameter_group(names[id(p)]) for p in offsets} == {"head"}
    with torch.no_grad():
        detections = model.eval()(images)
    assert set(detections[0]) == {"boxes", "labels", "scores"}
    maps = model.score_maps(images[0])
    assert maps["cls_offset_maps"].shape == (2 * 9 * (NUM_CLASSES + 1), *maps["cls_maps"].shape[1:])


def test_deformable_model_starts_from_the_plain_weights():
    """Offset convs start at zero without drawing random numbers, so a deformable model of a
    seed shares every other initial weight with the plain model of that seed."""
    torch.manual_seed(0)
    plain = build_model(_tiny_config())
    torch.manual_seed(0)
    deformable = build_model(_tiny_config(deformable_psroi=True, deformable_conv5="v1"))
    assert plain.offset_parameters() == []
    shared = dict(plain.named_parameters())
    extra = [n for n, p in deformable.named_parameters() if n not in shared]
    assert len(extra) == len(deformable.offset_parameters()) == 12
    for name, parameter in deformable.named_parameters():
        if name in shared:
            assert torch.equal(parameter, shared[name]), name
        else:
            assert not parameter.any(), name


def test_deformable_resnet101_k7_adds_the_original_offset_layers():
    with torch.device("meta"):
        model = build_model(
            ModelConfig(
                backbone="resnet101",
                num_classes=20,
                k=7,
                box_mode="agnostic8",
                deformable_psroi=True,
                deformable_conv5="v1",
            )
        )
    # Head: 1x1 convs from 1024 channels to 2 * 49 * 21 (class offsets) and 2 * 49 (box);
    # conv5: three 3x3 convs from 512 channels to 2 * 4 groups * 9 taps.
    head = 1024 * 2058 + 2058 + 1024 * 98 + 98
    conv5 = 3 * (512 * 72 * 9 + 72)
    assert sum(p.numel() for p in model.offset_parameters()) == head + conv5 == 3_205_444
    assert sum(p.numel() for p in model.parameters()) == 50_691_706 + 3_205_444


def test_ohem_trains_on_the_mean_of_each_images_top_b_losses(monkeypatch):
    """Known per-RoI losses in, the hand-computed OHEM losses out: per image the B RoIs of
    largest class + box loss, the class and box losses of all picks summed and divided by
    their count (box ones times lambda). Every loss of image 0 exceeds every loss of image 1,
    so a selection over the whole batch takes image 0's alone; the box losses reorder the
    class losses, so ranking on the class loss alone picks other RoIs."""
    torch.manual_seed(0)
    batch = 3
    model = build_model(_tiny_config(ohem_batch_per_image=batch, box_loss_weight=2.0)).train()
    model.train_parts = ("head",)
    images, targets = _images_and_targets()
    generator = torch.Generator().manual_seed(0)
    proposals = [
        torch.tensor([[0.0, 0.0, 40.0, 40.0]]) + 50 * torch.rand(7, 4, generator=generator)
        for _ in images
    ]
    seen = {}

    def known_losses(conv5, rois, labels, target_deltas):
        values = torch.Generator().manual_seed(1)
        cls = torch.rand(len(rois), generator=values) + 10.0 * (rois[:, 0] == 0)
        box = 2.0 * torch.rand(len(rois), generator=values)
        seen.update(image=rois[:, 0].tolist(), cls=cls.tolist(), box=box.tolist())
        return cls, box

    monkeypatch.setattr(model, "_per_roi_losses", known_losses)
    losses = model(images, targets, proposals=proposals)
    picked = []
    for image in (0, 1):
        rows = [i for i, b in enumerate(seen["image"]) if b == image]
        assert len(rows) > batch  # 7 proposals and the ground-truth boxes
        picked += sorted(rows, key=lambda i: seen["cls"][i] + seen["box"][i], reverse=True)[:batch]
    expected_cls = sum(seen["cls"][i] for i in picked) / len(picked)
    expected_box = 2.0 * sum(seen["box"][i] for i in picked) / len(picked)
    assert losses["loss_cls"].item() == pytest.approx(expected_cls, rel=1e-6)
    assert losses["loss_box"].item() == pytest.approx(expected_box, rel=1e-6)


def test_a_tiny_model_overfits_one_image_and_finds_its_box(overfit_square: Overfit) -> None:
    """Learning at all: :mod:`overfit`'s AdamW steps on one image with one red square (about a
    second). A sign error in a loss, targets matched to the wrong boxes or boxes decoded
    wrongly would leave the loss high or the detection off the square."""
    history = overfit_square.history
    # OHEM and the RPN's sampling make single steps noisy: compare the last five with the first
    assert sum(history[-5:]) / 5 < 0.5 * history[0], history
    with torch.no_grad():
        best = overfit_square.model([overfit_square.image])[0]
    assert best["labels"][0].item() == LABEL
    assert box_iou(best["boxes"][:1], overfit_square.box).item() > 0.5, best["boxes"][:1]
