"""CAM semantics, and the CAM checked against an independent Grad-CAM (pytorch_grad_cam)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepsolar.segmentation.branch import GreedyCamBranch, StageModel
from deepsolar.segmentation.cam import (
    cam_to_mask,
    class_activation_map,
    classify_with_taps,
    greedy_cam,
    mask_to_png_array,
    minmax_per_tile,
    plain_cam,
    threshold_mask,
    upsample,
)
from deepsolar.segmentation.config import BranchConfig


@pytest.mark.parametrize("stage", [1, 2])
def test_cam_equals_grad_cam_up_to_a_positive_factor(stage):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(3)
    branch = GreedyCamBranch(BranchConfig(channels=32, n_stages=2)).eval()
    features = torch.relu(torch.randn(2, 288, 9, 9))  # Mixed_5d outputs are post-ReLU
    ours = greedy_cam(branch, features, stage).numpy()
    model = StageModel(branch, stage).eval()
    with GradCAM(model=model, target_layers=[branch.stages[stage - 1]]) as gc:
        theirs = gc(input_tensor=features, targets=[ClassifierOutputTarget(1)] * 2)
    for o, t in zip(ours, theirs, strict=True):
        # Grad-CAM = ReLU(sum_k mean(dy/dA_k) A_k) = ReLU(CAM) / (h*w) for GAP + linear heads.
        assert (o > 0).any() and (o < 0).any()  # a non-trivial map with both signs
        pos = np.maximum(o, 0)
        norm = (pos - pos.min()) / (pos.max() - pos.min())
        np.testing.assert_allclose(norm, t, atol=1e-5)
        keep = t > 1e-3
        ratio = pos[keep] / t[keep]
        assert ratio.min() > 0
        np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-4)


def test_cam_is_the_weighted_sum_of_feature_maps():
    f = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    w = torch.tensor([[9.0, 9.0, 9.0], [1.0, -2.0, 0.5]])
    cam = class_activation_map(f, w)
    expected = f[:, 0] * 1.0 - 2.0 * f[:, 1] + 0.5 * f[:, 2]
    torch.testing.assert_close(cam, expected)


def test_upsample_is_bilinear_half_pixel_and_keeps_native_size():
    cam = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    up = upsample(cam, 4)
    assert up.shape == (1, 4, 4)
    ref = F.interpolate(cam[:, None], size=(4, 4), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(up, ref)
    # half-pixel centres: the corner keeps the corner value, the next pixel blends 3:1
    assert up[0, 0, 0] == 0.0 and up[0, 0, 1] == pytest.approx(0.25)
    assert upsample(cam, (2, 2)) is cam


def test_minmax_per_tile_and_flat_maps():
    cam = torch.stack([torch.tensor([[2.0, 4.0], [6.0, 10.0]]), torch.full((2, 2), 5.0)])
    n = minmax_per_tile(cam)
    torch.testing.assert_close(n[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(n[1], torch.zeros(2, 2))  # no evidence anywhere -> no panel


def test_threshold_is_strictly_above():
    n = torch.tensor([[[0.36, 0.37], [0.38, 1.0]]])
    assert threshold_mask(n, 0.37).tolist() == [[[False, False], [True, True]]]


def test_cam_to_mask_order_upsample_then_normalise_then_threshold():
    native = torch.tensor([[[1.0, 3.0], [1.0, 3.0]]])
    norm, mask = cam_to_mask(native, (2, 4), 0.37)
    # bilinear to 2x4 gives columns 1, 1.5, 2.5, 3 -> min-max 0, 0.25, 0.75, 1
    torch.testing.assert_close(norm[0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert mask[0, 0].tolist() == [False, False, True, True]
    assert mask_to_png_array(mask[0]).tolist()[0] == [0, 0, 255, 255]


def test_plain_cam_uses_mixed7c_and_fc_and_taps_match(tiny_classifier):
    from deepsolar.classifier.predict import load_classifier

    clf = load_classifier(tiny_classifier, "cpu")
    x = torch.rand(2, 3, 75, 75) * 2 - 1
    fwd = classify_with_taps(clf.model, x)
    with torch.no_grad():
        logits = clf.model(x)
    torch.testing.assert_close(fwd.probs, torch.softmax(logits, 1)[:, 1])
    assert fwd.tap.shape[1] == 288 and fwd.final.shape[1] == 2048
    cam = plain_cam(clf.model, fwd.final)
    expected = torch.einsum("bchw,c->bhw", fwd.final, clf.model.fc.weight[1])
    torch.testing.assert_close(cam, expected)
    # GAP of the plain CAM + bias is the classifier's positive logit (the CAM identity).
    torch.testing.assert_close(
        cam.mean(dim=(1, 2)) + clf.model.fc.bias[1], logits[:, 1], rtol=1e-4, atol=1e-4
    )


def _backbone_features(arch: str, tap: str, px: int) -> torch.Tensor:
    """Real tapped features of a (random-init) classifier of ``arch``."""
    from deepsolar.classifier.config import ClassifierConfig
    from deepsolar.classifier.model import build_classifier
    from deepsolar.segmentation.branch import tap_features

    torch.manual_seed(0)
    model = build_classifier(ClassifierConfig(arch=arch, weights="none", input_size_px=px)).eval()
    with torch.no_grad():
        return tap_features(model, torch.randn(2, 3, px, px), tap)


@pytest.mark.parametrize(
    ("arch", "tap", "px", "channels"),
    [
        ("inception_v3", "Mixed_5d", 75, 288),
        ("efficientnet_lite0", "blocks.2", 96, 40),
        ("efficientnet_lite0", "blocks.4", 96, 112),
        ("efficientnet_lite2", "blocks.4", 96, 120),
    ],
)
def test_grad_cam_oracle_on_every_backbones_tap(arch, tap, px, channels):
    """The greedy branch on each backbone's real tapped map: CAM = Grad-CAM up to a factor."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    features = _backbone_features(arch, tap, px)
    assert features.shape[1] == channels
    branch = GreedyCamBranch(BranchConfig(channels=16, n_stages=2), channels).eval()
    for stage in (1, 2):
        ours = greedy_cam(branch, features, stage).numpy()
        with GradCAM(model=StageModel(branch, stage).eval(),
                     target_layers=[branch.stages[stage - 1]]) as gc:  # fmt: skip
            theirs = gc(input_tensor=features, targets=[ClassifierOutputTarget(1)] * 2)
        for o, t in zip(ours, theirs, strict=True):
            pos = np.maximum(o, 0)
            if pos.max() == pos.min():
                continue
            norm = (pos - pos.min()) / (pos.max() - pos.min())
            np.testing.assert_allclose(norm, t, atol=1e-4)


@pytest.mark.parametrize("arch", ["efficientnet_lite0", "inception_v3"])
def test_plain_cam_identity_on_each_backbone(arch):
    """GAP of the plain CAM + bias is the positive logit, for the backbone's own last layer."""
    from deepsolar.classifier.config import ClassifierConfig
    from deepsolar.classifier.model import build_classifier

    torch.manual_seed(0)
    px = 75 if arch == "inception_v3" else 96
    model = build_classifier(ClassifierConfig(arch=arch, weights="none", input_size_px=px)).eval()
    x = torch.randn(2, 3, px, px)
    tap = "Mixed_5d" if arch == "inception_v3" else "blocks.4"
    fwd = classify_with_taps(model, x, arch=arch, tap=tap)
    with torch.no_grad():
        logits = model(x)
    cam = plain_cam(model, fwd.final, arch)
    bias = model.fc.bias if arch == "inception_v3" else model.classifier.bias
    torch.testing.assert_close(cam.mean(dim=(1, 2)) + bias[1], logits[:, 1], rtol=1e-4, atol=1e-4)
