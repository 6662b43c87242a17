"""The measurements of ``rfcn benchmark``: each returns plain numbers ready for JSON.

Every case times a closure with :func:`rfcn.benchmark.timing.time_call` (median and IQR after
warm-up) and takes the peak memory of its last warm-up call; the cases whose ratios are reported
(RoI counts) take turns (:func:`measure_side_by_side`). Inference runs under
``torch.inference_mode`` in float32 with contiguous (NCHW) tensors unless a fast-path variant
says otherwise; R-FCN and its C4 counterpart (:mod:`rfcn.modeling.c4_baseline`) always run under
the same settings, on the same images and the same RoIs.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

from rfcn.benchmark.timing import peak_memory_mib, time_side_by_side
from rfcn.config import ModelConfig, TrainConfig
from rfcn.engine.optim import build_optimizer
from rfcn.inference.fast_path import bf16_is_fast, detection_agreement, optimize_for_inference
from rfcn.modeling.rfcn import RFCN, build_model

Case = TypeVar("Case", bound=Hashable)


@dataclass(frozen=True)
class Budget:
    """How each case is repeated, and where."""

    device: torch.device
    warmup: int
    repeats: int


def measure(fn: Callable[[], object], budget: Budget) -> dict[str, Any]:
    """``{"time": TimingStats dict, "memory": {"peak_mib", "added_mib"} | None}`` of ``fn``.

    The peak memory is read during the last warm-up call, so it costs no extra call.
    """
    return measure_side_by_side({"fn": fn}, budget)["fn"]


def measure_side_by_side(
    fns: Mapping[Case, Callable[[], object]], budget: Budget
) -> dict[Case, dict[str, Any]]:
    """:func:`measure` of every function, their timed calls taking turns
    (:func:`~rfcn.benchmark.timing.time_side_by_side`): for cases whose ratio is reported."""
    if budget.warmup < 1:
        raise ValueError("need at least one warm-up call (it also measures peak memory)")
    memory = {}
    for key, fn in fns.items():
        for _ in range(budget.warmup - 1):
            fn()
        memory[key] = peak_memory_mib(fn, budget.device)
    stats = time_side_by_side(list(fns.values()), budget.device, warmup=0, repeats=budget.repeats)
    return {
        key: {"time": timing.to_dict(), "memory": memory[key]}
        for key, timing in zip(fns, stats, strict=True)
    }


def median_ms(result: dict[str, Any]) -> float:
    return float(result["time"]["median_ms"])


def calibrate_batch_norm(model: nn.Module, images: list[Tensor]) -> None:
    """Set every BatchNorm's statistics to those of its input on ``images`` (in place).

    A randomly initialised ResNet whose BatchNorms hold their initial statistics (mean 0,
    variance 1) is far from unit scale: each residual block adds its branch's variance, so
    ResNet-101's conv4 overflows float32 and its RPN keeps no proposal at all. The benchmark
    needs realistic numbers of proposals, detections and NMS work, so each norm layer is
    fitted to its actual input, in network order during one forward pass (a forward
    pre-hook sets the statistics just before the layer normalises with them).
    """

    def fit(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        features = inputs[0]
        module.running_mean.copy_(features.mean(dim=(0, 2, 3)))
        module.running_var.copy_(features.var(dim=(0, 2, 3)))

    norms = [m for m in model.modules() if isinstance(m, (FrozenBatchNorm2d, nn.BatchNorm2d))]
    handles = [norm.register_forward_pre_hook(fit) for norm in norms]
    try:
        with torch.no_grad():
            model.eval()(images)
    finally:
        for handle in handles:
            handle.remove()


def random_boxes(count: int, height: int, width: int, generator: torch.Generator) -> Tensor:
    """``(count, 4)`` boxes inside ``height x width``: centres uniform, sides log-uniform
    from 16 px to the image side (the spread of RPN proposals)."""
    centres = torch.rand(count, 2, generator=generator) * torch.tensor([width, height])
    low, high = torch.log(torch.tensor(16.0)), torch.log(torch.tensor([width, height]).float())
    sides = torch.exp(low + torch.rand(count, 2, generator=generator) * (high - low))
    top_left = (centres - sides / 2).clamp(min=0)
    bottom_right = torch.minimum(centres + sides / 2, torch.tensor([width, height]).float())
    return torch.cat((top_left, bottom_right), dim=1)


def random_targets(
    count: int, height: int, width: int, num_classes: int, generator: torch.Generator
) -> dict[str, Tensor]:
    """Ground truth for a training step: ``count`` random boxes with random labels in 1..C."""
    boxes = random_boxes(count, height, width, generator)
    labels = torch.randint(1, num_classes + 1, (count,), generator=generator)
    return {"boxes": boxes, "labels": labels}


def inference_cases(
    rfcn: RFCN,
    c4: RFCN | None,
    images: list[Tensor],
    roi_counts: tuple[int, ...],
    budget: Budget,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Backbone floor, whole pipelines and heads alone (``images`` all of one size); the C4
    counterpart's cases only when ``c4`` is given.

    - ``backbone``: conv1..conv5 of R-FCN on the transformed images (the floor);
    - ``pipeline``: ``model(images)`` end to end (transform, backbone, RPN, head,
      post-processing) with the RPN keeping its configured ``N = roi_counts[0]`` proposals
      (``rpn_post_nms_test``); ``proposals``
      is how many it really kept per image (NMS can leave fewer, as it does with random
      weights for large N, hence the next case);
    - ``pipeline_given_rois``: ``model(images, proposals=...)`` with exactly ``N`` random RoIs
      per image for every N (the RPN, whose cost does not depend on N, is skipped); C4 at the
      first count only, its head alone shows how it grows;
    - ``head``: exactly ``N`` random RoIs fed to the part after conv4 that each detector runs:
      R-FCN's conv5 + score maps + PS-RoI pooling + voting (per image); C4's RoI pooling +
      per-RoI conv5 + fc layers.
    """
    device = budget.device
    fewest = roi_counts[0]
    detectors = {"rfcn": rfcn} if c4 is None else {"rfcn": rfcn, "c4": c4}
    if {model.rpn.post_nms_top_n["test"] for model in detectors.values()} != {fewest}:
        raise ValueError(f"build the detectors with rpn_post_nms_test = {fewest}")
    results: dict[str, Any] = {
        name: {"rfcn": {}, "c4": {}} for name in ("pipeline", "pipeline_given_rois", "head")
    }
    with torch.inference_mode():
        batch, _ = rfcn.transform(images)
        results["network_input_hw"] = list(batch.tensor.shape[-2:])
        results["backbone"] = measure(lambda: rfcn.backbone(batch.tensor), budget)
        conv4 = rfcn.backbone.trunk(batch.tensor)
        height, width = batch.image_sizes[0]
        input_height, input_width = images[0].shape[-2:]
        for name, model in detectors.items():
            result = measure(lambda model=model: model(images), budget)
            result["proposals"] = [len(p) for p in model.propose(images, fewest)]
            results["pipeline"][name][str(fewest)] = result
        by_count: dict[tuple[str, str, str], Callable[[], object]] = {}
        for count in roi_counts:
            key = str(count)
            given = [
                random_boxes(count, input_height, input_width, generator).to(device) for _ in images
            ]
            boxes = random_boxes(count, height, width, generator)
            rois = torch.cat((boxes.new_zeros(count, 1), boxes), dim=1).to(device)  # (N, 5)
            for name, model in detectors.items():
                if name == "rfcn" or count == fewest:
                    by_count["pipeline_given_rois", name, key] = lambda model=model, given=given: (
                        model(images, proposals=given)
                    )
                by_count["head", name, key] = lambda model=model, rois=rois: model.head(
                    model.backbone.conv5(conv4), rois
                )
        for (case, name, key), result in measure_side_by_side(by_count, budget).items():
            results[case][name][key] = result
    return results


def training_cases(
    model: RFCN,
    images: list[Tensor],
    targets: list[dict[str, Tensor]],
    roi_counts: Sequence[int],
    budget: Budget,
    generator: torch.Generator,
) -> dict[str, dict[str, Any]]:
    """One SGD iteration (forward with OHEM, backward, step) from each of ``roi_counts`` RoIs
    per image, as the paper's Table 3, timed side by side; keyed by the count as text. Runs on
    a copy: ``model`` is left as it was.

    The RPN runs and is trained as usual, but the head gets exactly that many random RoIs
    per image (plus the ground truth, as always): a randomly initialised RPN keeps far fewer
    than 2000 proposals after NMS, which would hide the cost being measured.
    """
    trainee = copy.deepcopy(model).train()
    optimizer = build_optimizer(trainee.parameters(), TrainConfig())

    def step(given: list[Tensor]) -> None:
        losses = trainee(images, targets, proposals=given)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        optimizer.step()

    steps = {}
    for count in roi_counts:
        given = [
            random_boxes(count, *image.shape[-2:], generator).to(image.device) for image in images
        ]
        steps[str(count)] = lambda given=given: step(given)
    results = measure_side_by_side(steps, budget)
    for count in roi_counts:
        results[str(count)]["rois"] = [count + len(target["boxes"]) for target in targets]
    return results


@dataclass(frozen=True)
class Variant:
    """One way of running inference: grad mode, memory format, bf16 scope, compiled backbone."""

    inference_mode: bool = True
    channels_last: bool = False
    bf16: Literal["backbone", "convs"] | None = None
    compile_backbone: bool = False

    def build(self, base: RFCN) -> RFCN:
        """A prepared copy of ``base`` (left untouched)."""
        return optimize_for_inference(
            copy.deepcopy(base), self.channels_last, self.bf16, self.compile_backbone
        )

    @contextlib.contextmanager
    def grad_mode(self) -> Iterator[None]:
        with torch.inference_mode() if self.inference_mode else torch.no_grad():
            yield


def fast_path_variants(device: torch.device, compile_backbone: bool) -> dict[str, Variant]:
    """The variants :func:`fast_path_cases` measures; bf16 only where the hardware has it."""
    variants = {
        "no_grad": Variant(inference_mode=False),
        "inference_mode": Variant(),
        "channels_last": Variant(channels_last=True),
    }
    if bf16_is_fast(device):
        variants["bf16_backbone"] = Variant(bf16="backbone")
        variants["bf16_convs"] = Variant(bf16="convs")
        variants["channels_last_bf16_convs"] = Variant(channels_last=True, bf16="convs")
    if compile_backbone:
        variants["compile"] = Variant(compile_backbone=True)
        if bf16_is_fast(device):
            variants["channels_last_bf16_convs_compile"] = Variant(
                channels_last=True, bf16="convs", compile_backbone=True
            )
    return variants


def fast_path_cases(
    rfcn: RFCN,
    images: list[Tensor],
    batch_images: list[Tensor],
    budget: Budget,
    generator: torch.Generator,
    compile_backbone: bool,
) -> dict[str, Any]:
    """R-FCN's whole pipeline under each inference speed-up, and what bf16 changes.

    Variants (:func:`fast_path_variants`): ``no_grad`` (plain eval), ``inference_mode`` (the
    benchmark's reference), ``channels_last``, ``bf16_backbone`` (conv1..conv5 under autocast),
    ``bf16_convs`` (also the RPN and head convs), ``channels_last_bf16_convs``, and with
    ``compile_backbone`` ``compile`` (``torch.compile`` of the float32 backbone) and
    ``channels_last_bf16_convs_compile``; a compiled variant's first call, which compiles, is
    timed apart as ``compile_seconds``. Each variant also times its own backbone alone
    (``backbone``, ``over_backbone``: the pipeline's overhead at that precision); ``speedup`` is
    the reference's median over the variant's. ``batched`` times one reference call on
    ``len(batch_images)`` images and reports it per image. ``bf16_agreement`` compares each
    bf16 variant with the reference (empty where the hardware has no fast bf16).
    """
    results: dict[str, Any] = {"variants": {}, "bf16_agreement": {}}
    variants = fast_path_variants(budget.device, compile_backbone)
    reference = variants["inference_mode"].build(rfcn)
    for name, variant in variants.items():
        model = variant.build(rfcn)
        result: dict[str, Any] = {}
        with variant.grad_mode():
            if variant.compile_backbone:
                start = time.perf_counter()
                model(images)
                result["compile_seconds"] = time.perf_counter() - start
            result.update(measure(lambda model=model: model(images), budget))
            tensor = model.transform(images)[0].tensor
            result["backbone"] = measure(
                lambda model=model, tensor=tensor: model.backbone(tensor), budget
            )
            if variant.bf16 is not None:
                results["bf16_agreement"][name] = bf16_agreement(
                    reference, model, images, generator
                )
        result["over_backbone"] = median_ms(result) / median_ms(result["backbone"])
        results["variants"][name] = result
    reference_ms = median_ms(results["variants"]["inference_mode"])
    for result in results["variants"].values():
        result["speedup"] = reference_ms / median_ms(result)
    with torch.inference_mode():
        batched = measure(lambda: reference(batch_images), budget)
    batched["images"] = len(batch_images)
    batched["per_image_ms"] = median_ms(batched) / len(batch_images)
    batched["speedup_per_image"] = reference_ms / batched["per_image_ms"]
    results["batched"] = batched
    return results


def bf16_agreement(
    reference: RFCN, candidate: RFCN, images: list[Tensor], generator: torch.Generator
) -> dict[str, Any]:
    """What bf16 changes, in two views.

    ``detections``: the final detections, matched by label and IoU (see
    :func:`detection_agreement`); with random weights every class scores about 1/(C+1), so
    tiny score changes reorder NMS and the match rate understates agreement.
    ``head_on_fixed_rois``: on the same 300 fixed RoIs, the largest change of a class logit and
    of a box delta, each relative to the spread (standard deviation) of the float32 values; the
    decoded boxes' largest change in network pixels; and how often the top class stays the same.

    Judge accuracy with trained weights (``--weights``): a random deep ResNet amplifies rounding
    from layer to layer (seen here: bf16 changes a random ResNet-101's conv4 by 60% of its norm,
    a trained ResNet-18 R-FCN's logits by 0.5% of their spread).
    """
    detections = detection_agreement(reference(images), candidate(images))
    batch, _ = reference.transform(images)
    height, width = batch.image_sizes[0]
    boxes = random_boxes(300, height, width, generator).to(batch.tensor.device)
    rois = torch.cat((boxes.new_zeros(len(boxes), 1), boxes), dim=1)
    outputs = []
    for model in (reference, candidate):
        _, conv5 = model.backbone(batch.tensor)
        logits, deltas = model.head(conv5, rois)  # (K, C + 1), (K, M, 4)
        outputs.append((logits, deltas, model.head_box_coder.decode(deltas, boxes)))
    (ref_logits, ref_deltas, ref_boxes), (logits, deltas, decoded) = outputs
    return {
        "detections": detections,
        "head_on_fixed_rois": {
            "rois": len(boxes),
            "max_logit_error_relative": float((logits - ref_logits).abs().max() / ref_logits.std()),
            "max_delta_error_relative": float((deltas - ref_deltas).abs().max() / ref_deltas.std()),
            "max_box_diff_px": float((decoded - ref_boxes).abs().max()),
            "same_top_class_fraction": float(
                (logits.argmax(dim=1) == ref_logits.argmax(dim=1)).float().mean()
            ),
        },
    }


# Plain R-FCN and its Deformable ConvNets variants: model settings of each.
DEFORMABLE_VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {"deformable_psroi": False, "deformable_conv5": "none"},
    "dpsroi": {"deformable_psroi": True, "deformable_conv5": "none"},
    "dconv5": {"deformable_psroi": False, "deformable_conv5": "v1"},
    "dpsroi_dconv5": {"deformable_psroi": True, "deformable_conv5": "v1"},
}


def deformable_cases(
    cfg: ModelConfig,
    images: list[Tensor],
    roi_counts: tuple[int, ...],
    budget: Budget,
    generator: torch.Generator,
) -> dict[str, Any]:
    """Plain R-FCN beside deformable PS-RoI pooling, deformable conv5 (v1) and both
    (:data:`DEFORMABLE_VARIANTS`), each built from ``cfg`` with random weights and BatchNorm
    fitted to ``images``, on the same images and the same RoIs, for each N in ``roi_counts``:

    - ``pipeline_given_rois``: ``model(images, proposals=...)`` with exactly N random RoIs per
      image (the RPN, the same in every variant, is skipped);
    - ``head``: conv5 + head on exactly N random RoIs: where the variants differ.

    The offset layers keep their zero initialisation: sampling costs the same wherever the
    offsets put the samples. :func:`rfcn.benchmark.report.deformable_overheads` gives each
    variant's time over plain R-FCN's.
    """
    device = budget.device
    input_height, input_width = images[0].shape[-2:]
    given = {
        str(n): [random_boxes(n, input_height, input_width, generator).to(device) for _ in images]
        for n in roi_counts
    }
    rois: dict[str, Tensor] = {}
    results: dict[str, Any] = {}
    for name, settings in DEFORMABLE_VARIANTS.items():
        model = build_model(replace(cfg, **settings)).to(device)
        calibrate_batch_norm(model, images)
        cases: dict[str, Any] = {"pipeline_given_rois": {}, "head": {}}
        with torch.inference_mode():
            batch, _ = model.eval().transform(images)
            conv4 = model.backbone.trunk(batch.tensor)
            height, width = batch.image_sizes[0]
            for count in roi_counts:
                key = str(count)
                if key not in rois:  # the same RoIs for every variant
                    boxes = random_boxes(count, height, width, generator)
                    rois[key] = torch.cat((boxes.new_zeros(count, 1), boxes), dim=1).to(device)
                cases["pipeline_given_rois"][key] = measure(
                    lambda model=model, key=key: model(images, proposals=given[key]), budget
                )
                cases["head"][key] = measure(
                    lambda model=model, key=key, conv4=conv4: model.head(
                        model.backbone.conv5(conv4), rois[key]
                    ),
                    budget,
                )
        results[name] = cases
    return {"variants": results}
