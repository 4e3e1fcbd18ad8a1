"""The demo's own steps: a training folder left by another config is moved aside, not mixed."""

from __future__ import annotations

import pytest

from deepsolar.core.errors import ConfigError, StaleCheckpointError
from deepsolar.core.training import check_resume_config
from deepsolar.jobs.demo import fresh_if_stale


def test_a_changed_config_is_a_stale_checkpoint_error():
    saved = {"data": {"train": [{"path": "a"}]}, "optim": {"epochs": 1}}
    current = {"data": {"train": [{"path": "a", "masks": False}]}, "optim": {"epochs": 2}}
    with pytest.raises(StaleCheckpointError, match="data.train"):
        check_resume_config(saved, current, {"optim.epochs"}, where="x.pt", fix="new folder")
    check_resume_config(saved, {**saved, "optim": {"epochs": 3}}, {"optim.epochs"},
                        where="x.pt", fix="new folder")  # fmt: skip


def test_a_stale_folder_is_moved_aside_and_the_step_runs_afresh(tmp_path):
    folder = tmp_path / "segmenter"
    folder.mkdir()
    (folder / "stage_1.pt").write_bytes(b"old")
    calls, warnings = [], []

    def step():
        calls.append(sorted(p.name for p in folder.glob("*")) if folder.exists() else None)
        if len(calls) == 1:
            raise StaleCheckpointError("the config differs", where=str(folder / "stage_1.pt"))
        folder.mkdir()
        return "trained"

    assert fresh_if_stale(step, folder, warnings.append) == "trained"
    assert calls == [["stage_1.pt"], None]  # the second run starts from an empty place
    (aside,) = tmp_path.glob("segmenter.stale-*")
    assert (aside / "stage_1.pt").read_bytes() == b"old"  # nothing deleted
    assert len(warnings) == 1 and str(aside) in warnings[0]


def test_other_errors_are_not_retried(tmp_path):
    def step():
        raise ConfigError("bad field")

    with pytest.raises(ConfigError, match="bad field"):
        fresh_if_stale(step, tmp_path / "x", print)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_known_stale_beforehand_is_moved_without_a_failed_run(tmp_path):
    folder = tmp_path / "mask-head"
    folder.mkdir()
    (folder / "last.pt").write_bytes(b"old")
    runs, warnings = [], []

    def step():
        runs.append(folder.exists())
        return "trained"

    reason = "last.pt: the config differs in data.train"
    assert fresh_if_stale(step, folder, warnings.append, lambda: reason) == "trained"
    assert runs == [False]  # one run, into an empty place
    assert len(warnings) == 1 and reason in warnings[0]
    assert fresh_if_stale(step, folder, warnings.append, lambda: None) == "trained"
    assert len(warnings) == 1  # resumable: nothing moved
