"""The greedy CAM branch: Mixed_5d tap shapes, stage stacking, freezing during greedy training."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import Inception3

from deepsolar.classifier.predict import load_classifier
from deepsolar.core.checkpoints import load_checkpoint_of
from deepsolar.core.errors import ConfigError, StaleCheckpointError
from deepsolar.segmentation.branch import (
    GreedyCamBranch,
    backbone_fingerprint,
    feature_taps,
    mixed5d_features,
)
from deepsolar.segmentation.config import BranchConfig, TrainSegmenterConfig
from deepsolar.segmentation.train import (
    SEGMENTER_CHECKPOINT,
    fit_segmenter,
    load_segmenter,
    stage_path,
    stale_stages,
)


@pytest.mark.slow
def test_mixed5d_tap_is_35x35x288_at_299_px_and_matches_the_hook():
    torch.manual_seed(0)
    model = Inception3(num_classes=2, aux_logits=False, init_weights=False).eval()
    x = torch.randn(1, 3, 299, 299)
    with torch.no_grad():
        f = mixed5d_features(model, x)
        with feature_taps(model, ("Mixed_5d",)) as taps:
            model(x)
    assert f.shape == (1, 288, 35, 35)
    torch.testing.assert_close(taps.outputs["Mixed_5d"], f)


def test_branch_shapes_and_stage_heads():
    branch = GreedyCamBranch(BranchConfig(channels=16, n_stages=3))
    f = torch.randn(2, 288, 7, 7)
    assert branch.stages[0].conv.in_channels == 288
    assert branch.stages[1].conv.in_channels == 16
    for k in (1, 2, 3):
        assert branch(f, k).shape == (2, 2)
        assert branch.feature_map(f, k).shape == (2, 16, 7, 7)
        assert branch.heads[k - 1].bias is None
    with pytest.raises(ValueError):
        branch(f, 4)


def test_training_stage_2_leaves_stage_1_unchanged():
    torch.manual_seed(0)
    branch = GreedyCamBranch(BranchConfig(channels=8, n_stages=2))
    before = {k: v.clone() for k, v in branch.state_dict().items()}
    names = branch.freeze_below(2)
    assert names and all(n.startswith(("stages.1", "heads.1")) for n in names)
    opt = torch.optim.SGD([p for p in branch.parameters() if p.requires_grad], lr=0.5)
    loss = torch.nn.functional.cross_entropy(
        branch(torch.randn(4, 288, 5, 5), 2), torch.tensor([0, 1, 0, 1])
    )
    loss.backward()
    opt.step()
    after = branch.state_dict()
    for k in before:
        same = torch.equal(before[k], after[k])
        assert same == k.startswith(("stages.0", "heads.0")), k


@pytest.mark.slow
def test_greedy_training_checkpoints_per_stage_and_resumes(tiny_classifier, tiny_chips, tmp_path):
    cfg = TrainSegmenterConfig.model_validate(
        {
            "classifier_checkpoint": str(tiny_classifier),
            "branch": {"channels": 16, "n_stages": 2},
            "optim": {"batch_size": 4, "epochs_per_stage": 2},
            "data": {"train": [{"kind": "folder", "path": str(tiny_chips)}]},
            "train": {"progress": False},
        }
    )
    clf_fp = backbone_fingerprint(load_classifier(tiny_classifier, "cpu").model)
    res = fit_segmenter(cfg, tmp_path)
    s1 = load_checkpoint_of(stage_path(tmp_path, 1), SEGMENTER_CHECKPOINT)
    s2 = load_checkpoint_of(stage_path(tmp_path, 2), SEGMENTER_CHECKPOINT)
    assert (s1["stages_trained"], s2["stages_trained"]) == (1, 2)
    assert s2["backbone_fingerprint"] == clf_fp  # backbone untouched by training
    for k, v in s1["branch_state"].items():  # stage 1 frozen while stage 2 trained
        torch.testing.assert_close(s2["branch_state"][k], v, rtol=0, atol=0)
    assert [h["stage"] for h in res.history] == [1, 1, 2, 2]
    seg = load_segmenter(res.final_checkpoint)
    assert seg.stages_trained == 2 and not seg.branch.training
    # Done stages are skipped on a re-run; nothing changes.
    again = fit_segmenter(cfg, tmp_path)
    assert [h["stage"] for h in again.history] == [1, 1, 2, 2]
    # Lengthening the schedule would train stage 1 under a finished stage 2: refused.
    more = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs_per_stage": 3})})
    with pytest.raises(ConfigError, match="stage 2 was already"):
        fit_segmenter(more, tmp_path)


@pytest.mark.slow
def test_a_half_trained_stage_resumes_from_its_last_epoch(tiny_classifier, tiny_chips, tmp_path):
    cfg = TrainSegmenterConfig.model_validate(
        {
            "classifier_checkpoint": str(tiny_classifier),
            "branch": {"channels": 8, "n_stages": 2},
            "optim": {"batch_size": 4, "epochs_per_stage": 1},
            "data": {"train": [{"kind": "folder", "path": str(tiny_chips)}]},
            "train": {"progress": False},
        }
    )
    fit_segmenter(cfg, tmp_path, upto_stage=1)  # "interrupted" after stage 1, epoch 1
    first = load_checkpoint_of(stage_path(tmp_path, 1), SEGMENTER_CHECKPOINT)["branch_state"]
    more = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"epochs_per_stage": 2})})
    res = fit_segmenter(more, tmp_path)
    assert [(h["stage"], h["epoch"]) for h in res.history] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    resumed = load_checkpoint_of(stage_path(tmp_path, 1), SEGMENTER_CHECKPOINT)["branch_state"]
    assert not torch.equal(first["stages.0.conv.weight"], resumed["stages.0.conv.weight"])


@pytest.mark.slow
def test_resume_refuses_a_different_recipe(tiny_classifier, tiny_chips, tmp_path):
    base = {
        "classifier_checkpoint": str(tiny_classifier),
        "branch": {"channels": 8, "n_stages": 1},
        "optim": {"batch_size": 4, "epochs_per_stage": 1},
        "data": {"train": [{"kind": "folder", "path": str(tiny_chips)}]},
        "train": {"progress": False},
    }
    fit_segmenter(TrainSegmenterConfig.model_validate(base), tmp_path)
    assert stale_stages(TrainSegmenterConfig.model_validate(base), tmp_path) is None
    base["optim"]["lr"] = 0.1
    # the same keys, seen before training (quietly) and refused by it
    assert stale_stages(TrainSegmenterConfig.model_validate(base), tmp_path) == (
        "stage_1.pt: the config differs in optim.lr"
    )
    with pytest.raises(StaleCheckpointError, match="optim.lr"):
        fit_segmenter(TrainSegmenterConfig.model_validate(base), tmp_path)
