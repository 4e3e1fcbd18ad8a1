"""Classify + segment images and tile stores: probabilities, masks (PNG 0/255), areas, overlays.

:class:`Segmenter` runs the classifier once per batch (``Mixed_5d`` / ``Mixed_7c`` captured by
hooks) and the greedy branch (or, with ``cam.method: mask_head``, the supervised mask head of
:mod:`.maskhead` on its own taps) only on the tiles called positive. :func:`segment_tile_store` does a
whole tile store (``manifest.gpkg`` layer ``tiles``) resumably: a JSON-lines journal next to the
manifest records each finished tile (after its mask PNG is in place); a re-run skips them, and the
Parquet table is rebuilt atomically from the journal at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from deepsolar.classifier.data import read_chip
from deepsolar.classifier.model import preprocess
from deepsolar.classifier.predict import LoadedClassifier, load_classifier
from deepsolar.core.checkpoints import resolve_checkpoint
from deepsolar.core.device import resolve_device
from deepsolar.core.errors import ConfigError, InputDataError
from deepsolar.core.io import (
    atomic_output,
    file_sha256,
    iter_json_lines,
    last_per_key,
    write_table_atomic,
)
from deepsolar.geo.tiling import Tile
from deepsolar.imagery.manifest import read_manifest
from deepsolar.segmentation.area import mask_area_m2_tile
from deepsolar.segmentation.branch import resolve_tap
from deepsolar.segmentation.cam import (
    CamMaps,
    ForwardResult,
    classify_with_taps,
    clean_mask,
    greedy_cam_maps,
    mask_from_cam,
    mask_to_png_array,
    plain_cam_maps,
)
from deepsolar.segmentation.config import (  # noqa: F401 - SegmentTilesJob re-exported
    CamConfig,
    SegmentTilesJob,
    default_segmenter,
    uses_segmenter,
)
from deepsolar.segmentation.maskhead import (
    MASK_HEAD,
    LoadedMaskHead,
    check_mask_head_backbone,
    load_mask_head,
    mask_head_mask,
)
from deepsolar.segmentation.train import LoadedSegmenter, check_backbone, load_segmenter

JOURNAL_NAME = "segmentation.journal.jsonl"
TABLE_NAME = "segmentation.parquet"
MASKS_DIRNAME = "masks"
OVERLAYS_DIRNAME = "overlays"
TABLE_COLUMNS = ("tile_id", "prob", "is_positive", "mask_path", "area_m2", "error")


# ---------------------------------------------------------------- the model pair


@dataclass
class TileSegmentation:
    """One image's result: its probability and, for a positive, CAM and mask at the image size.

    Attributes:
        prob: probability of PV, 0-1.
        is_positive: ``prob`` reached the classifier threshold.
        cam: the normalised CAM (0-1; the panel probability for the mask head), positives only.
        mask: the boolean panel mask, positives only.
    """

    prob: float
    is_positive: bool
    cam: np.ndarray | None  # normalised CAM at the image size (positives only)
    mask: np.ndarray | None  # bool, image size (positives only)


class Segmenter:
    """A classifier and its CAM branch or mask head, ready for inference.

    The CAM branch is used with ``method: greedy``, the mask head with ``method: mask_head``.
    Evaluation may hold both to compare them side by side.

    Args:
        clf: the loaded classifier.
        seg: the greedy CAM branch (needed by ``method: greedy``).
        cam: how a CAM becomes a mask (None: DeepSolar's rule).
        mask_head: the mask head (needed by ``method: mask_head``).

    Raises:
        ConfigError: the method's checkpoint is missing, was trained on another backbone, or has
            fewer stages than ``cam.stage``.
    """

    def __init__(
        self,
        clf: LoadedClassifier,
        seg: LoadedSegmenter | None,
        cam: CamConfig | None = None,
        mask_head: LoadedMaskHead | None = None,
    ) -> None:
        self.clf = clf
        self.seg = seg
        self.mask_head = mask_head
        self.cam = cam or CamConfig()
        if self.cam.method == MASK_HEAD and mask_head is None:
            raise ConfigError(
                "cam.method mask_head needs a mask-head checkpoint",
                where="segmenter_checkpoint",
                fix="train one with train-mask-head and pass it as the segmenter checkpoint, or "
                "set cam.method: greedy / plain",
            )
        if mask_head is not None:
            check_mask_head_backbone(mask_head, clf)
            mask_head.decoder.to(clf.device).eval()
        if self.cam.method == "greedy":
            if seg is None:
                raise ConfigError(
                    "the greedy CAM needs a segmenter checkpoint",
                    where="segmenter_checkpoint",
                    fix="train one with train-segmenter, or set cam.method: plain",
                )
            check_backbone(seg, clf)
            if self.cam.stage is not None and self.cam.stage > seg.stages_trained:
                raise ConfigError(
                    f"cam.stage {self.cam.stage} but the segmenter has {seg.stages_trained} "
                    "trained stage(s)",
                    where=str(seg.checkpoint),
                    fix=f"set cam.stage to 1..{seg.stages_trained} or leave it empty",
                )
            seg.branch.to(clf.device).eval()

    @classmethod
    def from_checkpoints(
        cls,
        classifier_checkpoint: str | Path,
        segmenter_checkpoint: str | Path | None,
        cam: CamConfig | None = None,
        device: str = "auto",
        mask_head_checkpoint: str | Path | None = None,
    ) -> Segmenter:
        """Load the classifier and its segmenter checkpoint(s).

        ``segmenter_checkpoint`` is the greedy branch, or the mask head when ``cam.method`` is
        mask_head; ``mask_head_checkpoint`` adds a mask head beside a greedy branch.

        Args:
            classifier_checkpoint: a ``train-classifier`` checkpoint, or ``builtin``.
            segmenter_checkpoint: a ``train-segmenter`` or ``train-mask-head`` checkpoint (None:
                none).
            cam: how a CAM becomes a mask (None: DeepSolar's rule).
            device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
            mask_head_checkpoint: a ``train-mask-head`` checkpoint to hold beside a greedy branch.

        Returns:
            The segmenter.

        Raises:
            InputDataError: a checkpoint is missing or of the wrong kind.
            ConfigError: the device is unavailable, or the checkpoints do not fit together.
        """
        cam = cam or CamConfig()
        clf = load_classifier(classifier_checkpoint, device)
        seg, head = None, None
        if segmenter_checkpoint is not None:
            if cam.method == MASK_HEAD:
                head = load_mask_head(segmenter_checkpoint, clf.device)
            else:
                seg = load_segmenter(segmenter_checkpoint, clf.device)
        if mask_head_checkpoint is not None:
            head = load_mask_head(mask_head_checkpoint, clf.device)
        return cls(clf, seg, cam, head)

    @property
    def arch(self) -> str:
        """The classifier's ``model.arch``."""
        return self.clf.config.model.arch

    @property
    def tap(self) -> str:
        """The module the greedy branch taps (the segmenter's, else the arch's default)."""
        cfg_tap = self.seg.config.branch.tap if self.seg is not None else None
        return resolve_tap(cfg_tap, self.arch)

    def _forward(self, x: torch.Tensor) -> ForwardResult:
        extra = self.mask_head.taps if self.mask_head is not None else ()
        return classify_with_taps(self.clf.model, x, arch=self.arch, tap=self.tap, extra=extra)

    def _mask_head_maps(self, fwd: ForwardResult, idx: torch.Tensor | None = None) -> CamMaps:
        """The mask head's native logits as CamMaps (both fields: there is no margin map)."""
        assert self.mask_head is not None
        feats = [fwd.taps[t] if idx is None else fwd.taps[t][idx] for t in self.mask_head.taps]
        logits = self.mask_head.decoder(feats)
        return CamMaps(logits, logits)

    @property
    def threshold(self) -> float:
        """The classifier decision threshold, probability 0-1.

        ``cam.classifier_threshold``, else the checkpoint's.
        """
        t = self.cam.classifier_threshold
        return self.clf.threshold if t is None else t

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Preprocess images for the classifier, as a batch on its device.

        Args:
            images: RGB images (any size; resized to the network input).

        Returns:
            The batch, B x 3 x S x S.
        """
        return torch.stack(
            [preprocess(im, self.clf.input_size_px, self.clf.normalize) for im in images]
        ).to(self.clf.device)

    @torch.no_grad()
    def native_cams(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(probabilities, native CAMs of every kind) for a preprocessed batch: for evaluation.

        Keys: ``plain`` and, with a segmenter, ``stage1`` .. ``stageK``; with a mask head,
        ``mask_head`` (its native logits, see :meth:`mask`).

        Args:
            x: the preprocessed batch, B x 3 x S x S.

        Returns:
            The probabilities of PV (B, 0-1) and each kind's CAMs (B x h x w).
        """
        probs, maps = self.native_cam_maps(x)
        return probs, {k: m.positive for k, m in maps.items()}

    @torch.no_grad()
    def native_cam_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, CamMaps]]:
        """Like :meth:`native_cams`, with each kind's logit-margin map beside its CAM.

        Args:
            x: the preprocessed batch, B x 3 x S x S.

        Returns:
            The probabilities of PV (B, 0-1) and each kind's maps.
        """
        fwd = self._forward(x)
        maps = {"plain": plain_cam_maps(self.clf.model, fwd.final, self.arch)}
        if self.seg is not None:
            for k in range(1, self.seg.stages_trained + 1):
                maps[f"stage{k}"] = greedy_cam_maps(self.seg.branch, fwd.tap, k)
        if self.mask_head is not None:
            maps[MASK_HEAD] = self._mask_head_maps(fwd)
        return fwd.probs, maps

    def mask(
        self,
        maps: CamMaps,
        size_hw: tuple[int, int],
        m_per_px: float | None = None,
        kind: str | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(normalised CAM, boolean mask) of one image's native maps under this CamConfig.

        ``kind`` (default: ``cam.method``): ``mask_head`` maps are logits, whose mask is
        sigmoid > ``cam.mask_threshold`` (the "CAM" returned is the probability); any other kind
        is a CAM (min-max, threshold, floor).

        Args:
            maps: one image's native maps (batch of 1).
            size_hw: the image size, (height, width) px.
            m_per_px: the image's ground resolution, m/px (needed by ``cam.clean``).
            kind: the map kind (None: ``cam.method``).

        Returns:
            The normalised CAM (0-1) and the mask, H x W.

        Raises:
            ConfigError: ``cam.clean`` is on and ``m_per_px`` is None.
        """
        if (kind or self.cam.method) == MASK_HEAD:
            norm, mask = mask_head_mask(maps.positive, size_hw, self.cam.mask_threshold)
        else:
            norm, mask = mask_from_cam(
                maps, size_hw, threshold=self.cam.threshold, floor=self.cam.floor,
                floor_on=self.cam.floor_on, floor_scope=self.cam.floor_scope,
            )  # fmt: skip
        m = mask[0].cpu().numpy()
        if self.cam.clean.active:
            if m_per_px is None:
                raise ConfigError(
                    "cam.clean needs each image's ground pixel size",
                    where="cam.clean",
                    fix="segment georeferenced tiles, give the chips' ground_m_per_px, or turn "
                    "cleaning off",
                )
            m = clean_mask(m, m_per_px, self.cam.clean)
        return norm[0].cpu().numpy(), m

    @torch.no_grad()
    def segment(
        self,
        images: Sequence[Image.Image],
        m_per_px: Sequence[float | None] | float | None = None,
    ) -> list[TileSegmentation]:
        """Classify a batch; CAM + mask (at each image's own size) for the positives only.

        Args:
            images: RGB images.
            m_per_px: ground resolution of each image, m/px (one value for all; None: unknown),
                needed by ``cam.clean``.

        Returns:
            One result per image, in order.

        Raises:
            ConfigError: ``cam.clean`` is on and a positive image's ``m_per_px`` is None.
        """
        x = self.preprocess(images)
        fwd = self._forward(x)
        probs = fwd.probs.cpu().numpy().astype(float)
        pos = np.flatnonzero(probs >= self.threshold)
        out = [TileSegmentation(float(p), False, None, None) for p in probs]
        if len(pos) == 0:
            return out
        gsd = m_per_px if isinstance(m_per_px, Sequence) else [m_per_px] * len(images)
        idx = torch.as_tensor(pos, device=x.device)
        if self.cam.method == "greedy":
            maps = greedy_cam_maps(self.seg.branch, fwd.tap[idx], self.cam.stage)
        elif self.cam.method == MASK_HEAD:
            maps = self._mask_head_maps(fwd, idx)
        else:
            maps = plain_cam_maps(self.clf.model, fwd.final[idx], self.arch)
        for j, i in enumerate(pos):
            w, h = images[i].size
            norm, mask = self.mask(maps[j : j + 1], (h, w), gsd[i])
            out[i] = TileSegmentation(float(probs[i]), True, norm, mask)
        return out


# ---------------------------------------------------------------- files


def image_m_per_px(tile: Tile, image: Image.Image) -> float:
    """Ground metres per pixel of a tile's image (at the tile's centre latitude).

    Args:
        tile: the web-map tile.
        image: its image (may be resampled from the tile's own size).

    Returns:
        The ground resolution, m/px.
    """
    return tile.m_per_px * tile.size_px / image.size[0]


def write_png_atomic(array: np.ndarray, path: Path) -> None:
    """Write an image array (e.g. a 0/255 mask) as a PNG, atomically.

    Args:
        array: uint8 (H, W) or (H, W, 3) pixels.
        path: the destination PNG; its folder is created.
    """
    with atomic_output(path, suffix=".tmp.png") as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def mask_relpath(tile_relpath: str) -> str:
    """``tiles/21-320/x/y.png`` -> ``masks/21-320/x/y.png`` (other layouts: ``masks/<path>``).

    Args:
        tile_relpath: the tile image's path relative to the store.

    Returns:
        The mask PNG's path relative to the store (POSIX).
    """
    parts = Path(tile_relpath).parts
    rest = parts[1:] if len(parts) > 1 and parts[0] == "tiles" else parts
    return Path(MASKS_DIRNAME, *rest).with_suffix(".png").as_posix()


def run_key(job: SegmentTilesJob) -> str:
    """What the results depend on: both checkpoints' bytes and the CAM settings.

    Args:
        job: the segment-tiles job.

    Returns:
        A 16-hex-digit key.
    """
    kind = "mask_head" if job.cam.method == MASK_HEAD else "segmenter"
    parts = {
        "classifier": file_sha256(resolve_checkpoint(job.classifier_checkpoint, "classifier")),
        "segmenter": file_sha256(resolve_checkpoint(job.segmenter_checkpoint, kind))
        if job.segmenter_checkpoint
        else None,
        "cam": job.cam.key_dict(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def read_journal(path: Path, key: str) -> dict[str, dict[str, Any]]:
    """Latest record per tile made with the same run key (other settings are redone).

    Args:
        path: the segmentation journal (JSON lines; a torn last line from a killed run is
            skipped; missing: no records).
        key: the :func:`run_key` of this run.

    Returns:
        ``{tile_id: record}``.
    """
    records = (
        rec
        for _, rec in iter_json_lines(path)
        if isinstance(rec, dict) and rec.get("run_key") == key and "tile_id" in rec
    )
    return last_per_key(records, key=lambda rec: rec["tile_id"])


# ---------------------------------------------------------------- the tile store


@dataclass
class SegmentSummary:
    """What ``segment-tiles`` did to a tile store.

    Attributes:
        table_path: the per-tile Parquet table.
        n_tiles: tiles in the table.
        n_done_before: tiles already segmented with the same run key.
        n_positive: tiles called positive.
        n_errors: tiles that could not be read.
        total_area_m2: total panel area, m².
        overlays: the overlay PNGs written.
    """

    table_path: Path
    n_tiles: int
    n_done_before: int
    n_positive: int
    n_errors: int
    total_area_m2: float
    overlays: list[Path]

    def as_dict(self) -> dict[str, Any]:
        """The summary with paths as strings, JSON-ready.

        Returns:
            The fields by name.
        """
        d = self.__dict__.copy()
        d["table_path"] = str(self.table_path)
        d["overlays"] = [str(p) for p in self.overlays]
        return d


def _store_paths(manifest: Path) -> tuple[Path, Path]:
    p = Path(manifest)
    return (p, p / "manifest.gpkg") if p.is_dir() else (p.parent, p)


def _batches(seq: list, n: int) -> Iterator[list]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def segment_tile_store(job: SegmentTilesJob, *, progress: Any = None) -> SegmentSummary:
    """Classify every 'ok' tile; masks for the positives; table + journal in the store folder.

    Tiles already in the journal under the same :func:`run_key` are not redone.

    Args:
        job: the segment-tiles job.
        progress: called with the number of tiles after each batch (None: nothing).

    Returns:
        The summary.

    Raises:
        InputDataError: the manifest or a checkpoint cannot be read.
        ConfigError: the device is unavailable or the checkpoints do not fit together.
    """
    store, manifest_path = _store_paths(job.manifest)
    tiles = read_manifest(manifest_path)
    tiles = tiles[tiles["status"] == "ok"]
    if job.num_threads and resolve_device(job.device).type == "cpu":
        torch.set_num_threads(job.num_threads)
    segmenter = Segmenter.from_checkpoints(
        job.classifier_checkpoint,
        job.segmenter_checkpoint if uses_segmenter(job.cam.method) else None, job.cam, job.device,
    )  # fmt: skip
    key = run_key(job)
    journal_path = store / JOURNAL_NAME
    done = read_journal(journal_path, key)
    n_before = sum(1 for t in tiles["tile_id"] if t in done)
    rows = [
        r for r in tiles[["tile_id", "zoom", "tile_size_px", "x", "y", "path"]].itertuples(index=False)
        if r.tile_id not in done
    ]  # fmt: skip
    with open(journal_path, "a", encoding="utf-8") as journal:
        for batch in _batches(rows, job.batch_size):
            images, ok_rows, records = [], [], []
            for r in batch:
                try:
                    images.append(read_chip(store / str(r.path)))
                    ok_rows.append(r)
                except InputDataError as err:
                    records.append(
                        _record(r.tile_id, float("nan"), False, None, 0.0, str(err), key)
                    )
            gsd = [
                image_m_per_px(Tile(int(r.zoom), int(r.tile_size_px), int(r.x), int(r.y)), im)
                for r, im in zip(ok_rows, images, strict=True)
            ]
            results = segmenter.segment(images, gsd) if images else []
            for r, res in zip(ok_rows, results, strict=True):
                mask_rel, area = None, 0.0
                if res.is_positive:
                    mask_rel = mask_relpath(str(r.path))
                    write_png_atomic(mask_to_png_array(res.mask), store / mask_rel)
                    tile = Tile(int(r.zoom), int(r.tile_size_px), int(r.x), int(r.y))
                    area = mask_area_m2_tile(res.mask, tile)
                records.append(
                    _record(r.tile_id, res.prob, res.is_positive, mask_rel, area, None, key)
                )
            for rec in records:
                journal.write(json.dumps(rec) + "\n")
                done[rec["tile_id"]] = rec
            journal.flush()
            os.fsync(journal.fileno())
            if progress is not None:
                progress(len(batch))
    table = pd.DataFrame(
        [done[t] for t in tiles["tile_id"] if t in done], columns=[*TABLE_COLUMNS, "run_key"]
    )[list(TABLE_COLUMNS)]
    table["is_positive"] = table["is_positive"].astype(bool)
    table["prob"] = table["prob"].astype(float)
    table["area_m2"] = table["area_m2"].astype(float)
    for col in ("tile_id", "mask_path", "error"):  # a stable string schema, nulls as nulls
        table[col] = table[col].astype("string")
    table_path = write_table_atomic(table, store / TABLE_NAME, fmt="parquet")
    overlays = []
    if job.overlays:
        overlays = save_overlays_for_store(
            segmenter, store, tiles, table, job.overlays, job.overlay_seed
        )
    return SegmentSummary(
        table_path=table_path,
        n_tiles=len(table),
        n_done_before=n_before,
        n_positive=int(table["is_positive"].sum()),
        n_errors=int(table["error"].notna().sum()),
        total_area_m2=float(table["area_m2"].sum()),
        overlays=overlays,
    )


def _record(tile_id, prob, is_pos, mask_path, area, error, key) -> dict[str, Any]:
    return {
        "tile_id": str(tile_id),
        "prob": None if prob != prob else float(prob),  # NaN is not JSON
        "is_positive": bool(is_pos),
        "mask_path": mask_path,
        "area_m2": float(area),
        "error": error,
        "run_key": key,
    }


# ---------------------------------------------------------------- overlays


def save_overlay(
    image: Image.Image,
    cam: np.ndarray,
    mask: np.ndarray,
    path: Path,
    *,
    title: str = "",
    truth: np.ndarray | None = None,
) -> Path:
    """Three panels: the image, the normalised CAM over it, the mask (and truth outline).

    Args:
        image: the RGB image.
        cam: the normalised CAM, 0-1.
        mask: the panel mask.
        path: the PNG to write (atomically).
        title: the figure's title.
        truth: the true mask, drawn as a cyan outline (None: none).

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = 3
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4))
    arr = np.asarray(image)
    axes[0].imshow(arr)
    axes[0].set_title("image")
    axes[1].imshow(arr)
    axes[1].imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
    axes[1].set_title("CAM (min-max)")
    axes[2].imshow(arr)
    axes[2].imshow(np.ma.masked_where(~mask.astype(bool), mask), cmap="autumn", alpha=0.55)
    if truth is not None and truth.any():
        axes[2].contour(truth.astype(float), levels=[0.5], colors="cyan", linewidths=1)
    axes[2].set_title("mask" + (" (cyan: truth)" if truth is not None else ""))
    for a in axes:
        a.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    try:
        with atomic_output(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=80, format="png")
    finally:
        plt.close(fig)
    return path


def save_overlays_for_store(
    segmenter: Segmenter,
    store: Path,
    tiles: pd.DataFrame,
    table: pd.DataFrame,
    n: int,
    seed: int = 0,
) -> list[Path]:
    """Overlays (``overlays/<tile_id>.png``) for a seeded sample of the positive tiles.

    Args:
        segmenter: classifier + CAM rule.
        store: the tile store's folder.
        tiles: the manifest's tiles (``tile_id``, ``path``).
        table: the segmentation table (``tile_id``, ``is_positive``).
        n: at most this many overlays.
        seed: seed of the sample.

    Returns:
        The PNGs written.
    """
    pos = table.loc[table["is_positive"], "tile_id"].tolist()
    if not pos:
        return []
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(pos), size=min(n, len(pos)), replace=False).tolist())
    paths = tiles.set_index("tile_id")["path"]
    out = []
    for i in pick:
        tid = pos[i]
        img = read_chip(store / str(paths.loc[tid]))
        z, size, x, y = (int(p) for p in str(tid).split("-"))
        res = segmenter.segment([img], image_m_per_px(Tile(z, size, x, y), img))[0]
        if not res.is_positive:
            continue
        label = f"{tid}  p={res.prob:.2f}  {segmenter.cam.method}"
        if segmenter.cam.method == "greedy":
            label += f" stage {segmenter.cam.stage or segmenter.seg.stages_trained}"
        out.append(
            save_overlay(
                img, res.cam, res.mask, store / OVERLAYS_DIRNAME / f"{tid}.png", title=label
            )
        )
    return out
