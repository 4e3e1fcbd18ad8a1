"""Labelled image chips: reading, sources, a source from a plain path, and splits.

Sources are a folder (``pos/`` + ``neg/``), images + masks, a manifest CSV or a synthetic scene.
A chip is any image file; it is read as RGB (greyscale -> 3 equal channels, RGBA/LA -> alpha
dropped, palette -> RGB), rejected with an :class:`InputDataError` naming the file when it cannot be
decoded, has 16-bit/float pixels or is smaller than ``min_side_px``, and resized to the model's
square input (non-square chips are stretched, as DeepSolar's resize did).
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import multiprocessing.context
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import torch
from PIL import Image
from rasterio.features import rasterize
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset

from deepsolar.classifier.config import (
    ChipSource,
    FolderSource,
    ImagesSource,
    ManifestSource,
    SceneSource,
)
from deepsolar.classifier.model import preprocess
from deepsolar.core.errors import InputDataError
from deepsolar.core.io import atomic_write_bytes
from deepsolar.geo.tiling import Tile

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
EQUAL_AREA_CRS = "EPSG:5070"  # CONUS Albers: areas in m²


@dataclass(frozen=True)
class Chip:
    """One labelled image: ``label`` is 1 for solar, 0 for none; ``mask`` its PV mask, if any."""

    path: Path
    label: int
    source: str
    mask: Path | None = None
    # Sub-tiles (deepsolar.classifier.subtiles): the pixel window (left, top, right, bottom)
    # of the chip this sample covers, None for the whole chip; the chip's ground resolution.
    window: tuple[int, int, int, int] | None = None
    ground_m_per_px: float | None = None


# ---------------------------------------------------------------- reading one image


def read_chip(path: str | Path, *, min_side_px: int = 16) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image, or raise InputDataError naming it.

    Args:
        path: the image file.
        min_side_px: smallest accepted width or height, px.

    Returns:
        The image in RGB mode (greyscale repeated, alpha dropped, palette expanded).

    Raises:
        InputDataError: the file is missing or cannot be decoded, has 16/32-bit pixels, or is
            smaller than ``min_side_px``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputDataError("image file not found", where=str(p), fix="check the path")
    try:
        with Image.open(p) as im:
            im.load()
            rgb = _to_rgb(im, p)
    except InputDataError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputDataError(
            f"cannot decode the image ({err})",
            where=str(p),
            fix="re-export the file as PNG/JPEG or remove it from the data set",
        ) from None
    if min(rgb.size) < min_side_px:
        raise InputDataError(
            f"image is {rgb.size[0]}x{rgb.size[1]} px, smaller than {min_side_px} px",
            where=str(p),
            fix="remove the chip or lower data.min_side_px",
        )
    return rgb


def _to_rgb(im: Image.Image, p: Path) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        raise InputDataError(
            f"{im.mode} (16/32-bit) pixels are not supported",
            where=str(p),
            fix="convert the chip to 8-bit RGB or greyscale",
        )
    if im.mode == "P":
        im = im.convert("RGBA")
    # L/LA -> R=G=B; RGBA/LA -> alpha dropped (not composited: chips are opaque imagery).
    return im.convert("RGB")


def array_to_rgb(arr: np.ndarray, where: str = "array") -> Image.Image:
    """An in-memory chip (H x W, H x W x 1/3/4, uint8) as an RGB image.

    Args:
        arr: the pixels, uint8, H x W (greyscale) or H x W x 1, 3 or 4 (alpha dropped).
        where: what to name in an error message.

    Returns:
        The RGB image.

    Raises:
        InputDataError: the dtype is not uint8 or the shape is not one of the above.
    """
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        raise InputDataError(
            f"image array has dtype {a.dtype}, expected uint8",
            where=where,
            fix="pass 8-bit pixels (0-255)",
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim != 3 or a.shape[2] != 3:
        raise InputDataError(
            f"image array has shape {a.shape}, expected H x W (x 1, 3 or 4)",
            where=where,
            fix="pass greyscale, RGB or RGBA pixels in H x W x C order",
        )
    return Image.fromarray(np.ascontiguousarray(a))


# ---------------------------------------------------------------- sources


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def chips_from_folder(src: FolderSource) -> list[Chip]:
    """``path/<positive_dir>/*`` -> label 1, ``path/<negative_dir>/*`` -> label 0.

    Args:
        src: the folder source.

    Returns:
        The chips, positives first, each folder's images in name order.

    Raises:
        InputDataError: either folder is missing.
    """
    chips = []
    for sub, label in ((src.positive_dir, 1), (src.negative_dir, 0)):
        folder = src.path / sub
        if not folder.is_dir():
            raise InputDataError(
                f"missing '{sub}/' folder",
                where=str(src.path),
                fix=f"put positive chips in '{src.positive_dir}/' and negatives in "
                f"'{src.negative_dir}/' (or set positive_dir/negative_dir)",
            )
        chips += [Chip(p, label, src.display_name) for p in _list_images(folder)]
    return chips


def _subdir(root: Path, name: str) -> Path | None:
    """``root/name``, matched case-insensitively (``images`` finds ``Images``); None if absent."""
    exact = root / name
    if exact.is_dir():
        return exact
    if not root.is_dir():
        return None
    hits = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() == name.lower())
    return hits[0] if hits else None


def read_mask(path: str | Path) -> np.ndarray:
    """A PV mask file as a bool array (any non-zero pixel is PV), or InputDataError naming it.

    Args:
        path: the mask image (greyscale, or RGB(A): PV where any colour channel is non-zero).

    Returns:
        The H x W mask, True on PV pixels.

    Raises:
        InputDataError: the file cannot be decoded.
    """
    p = Path(path)
    try:
        with Image.open(p) as im:
            im.load()
            a = np.asarray(im)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise InputDataError(
            f"cannot decode the mask ({err})", where=str(p), fix="re-export it as a PNG"
        ) from None
    if a.ndim == 3:  # RGB(A) masks: PV where any colour channel is non-zero
        a = a[:, :, :3].any(axis=2) if a.shape[2] >= 3 else a[:, :, 0]
    return np.asarray(a) != 0


def chips_from_images(src: ImagesSource) -> list[Chip]:
    """``path/images/*`` (+ ``path/masks/<same stem>.*``): positive iff the mask has a PV pixel.

    Args:
        src: the images source (folder names matched case-insensitively).

    Returns:
        The chips in image-name order, each with its mask file (None without one).

    Raises:
        InputDataError: the images folder is missing, two masks share a stem, or an image has no
            mask while ``missing_mask_is_negative`` is false.
    """
    images_dir = _subdir(src.path, src.images_dir)
    if images_dir is None:
        raise InputDataError(
            f"missing '{src.images_dir}/' folder",
            where=str(src.path),
            fix=f"put the chips in '{src.images_dir}/' and their masks (same file names, any "
            f"image type) in '{src.masks_dir}/'",
        )
    masks_dir = _subdir(src.path, src.masks_dir)
    masks: dict[str, Path] = {}
    if masks_dir is not None:
        for m in _list_images(masks_dir):
            if m.stem in masks:
                raise InputDataError(
                    f"two masks share the stem '{m.stem}' ({masks[m.stem].name}, {m.name})",
                    where=str(masks_dir),
                    fix="keep one mask per image",
                )
            masks[m.stem] = m
    chips = []
    for img in _list_images(images_dir):
        mask = masks.get(img.stem)
        if mask is None and not src.missing_mask_is_negative:
            raise InputDataError(
                f"no mask for {img.name}",
                where=str(masks_dir or src.path / src.masks_dir),
                fix="add the mask (all zero for a negative) or set missing_mask_is_negative",
            )
        label = int(read_mask(mask).any()) if mask is not None else 0
        chips.append(Chip(img, label, src.display_name, mask))
    return chips


def source_from_path(path: str | Path, *, split: str | None = None) -> ChipSource:
    """The chip source a plain path denotes (what ``--source PATH`` accepts).

    - a ``.csv`` file: a manifest (``split`` keeps one split);
    - a folder with ``images/`` (+ optional ``masks/``): an :class:`ImagesSource`;
    - a folder with ``pos/`` and ``neg/``: a :class:`FolderSource`;
    - a folder with a ``manifest.csv``: that manifest.

    A folder with ``images/`` wins over its own ``manifest.csv`` only when no ``split`` is given.

    Args:
        path: a manifest CSV or a folder (``~`` expanded).
        split: keep only the manifest rows of this split.

    Returns:
        The source.

    Raises:
        InputDataError: the path does not exist, is a file other than a CSV, or is a folder of
            none of the kinds above.
    """
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".csv":
            raise InputDataError(
                "a source file must be a manifest CSV",
                where=str(p),
                fix="pass a folder with images/ (+ masks/) or pos/ + neg/, or a manifest.csv",
            )
        return ManifestSource(path=p, split=split)
    if not p.is_dir():
        raise InputDataError("source not found", where=str(p), fix="check the path")
    has_manifest = (p / "manifest.csv").is_file()
    if split is not None and has_manifest:
        return ManifestSource(path=p / "manifest.csv", split=split)
    if _subdir(p, "images") is not None:
        return ImagesSource(path=p)
    if _subdir(p, "pos") is not None and _subdir(p, "neg") is not None:
        pos, neg = _subdir(p, "pos"), _subdir(p, "neg")
        return FolderSource(path=p, positive_dir=pos.name, negative_dir=neg.name)
    if has_manifest:
        return ManifestSource(path=p / "manifest.csv", split=split)
    raise InputDataError(
        "cannot tell what kind of chip source this folder is",
        where=str(p),
        fix="give it images/ (+ masks/ with the same file names; a chip is positive when its "
        "mask has any non-zero pixel), or pos/ + neg/, or a manifest.csv",
    )


def _manifest_image_path(root: Path, split: str | None, image: str) -> Path:
    # Shared chip sets keep images in {split}/images/; plain manifests list paths from root.
    if split:
        nested = root / split / "images" / image
        if nested.is_file():
            return nested
    return root / image


def chips_from_manifest(src: ManifestSource) -> list[Chip]:
    """Rows of a manifest CSV; label = ``label`` column, else ``n_solar_polygons > 0``.

    Images and masks are found under ``{split}/images/`` and ``{split}/masks/`` when there, else
    relative to the manifest's folder; an optional ``ground_m_per_px`` column gives each chip's
    ground resolution (m/px).

    Args:
        src: the manifest source (``split`` keeps one split).

    Returns:
        The chips, in the manifest's row order.

    Raises:
        InputDataError: the manifest is missing or unreadable, lacks the ``image`` column or a
            label column, or has no rows of ``split``.
    """
    if not src.path.is_file():
        raise InputDataError(
            "manifest not found", where=str(src.path), fix="pass the path of a manifest.csv"
        )
    try:
        df = pd.read_csv(src.path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise InputDataError(
            f"cannot read the manifest CSV ({err})", where=str(src.path), fix="fix the CSV"
        ) from None
    if "image" not in df.columns:
        raise InputDataError(
            f"manifest has no 'image' column (columns: {', '.join(map(str, df.columns))})",
            where=str(src.path),
            fix="add an 'image' column with paths relative to the manifest's folder",
        )
    if "label" in df.columns:
        labels = df["label"].astype(int)
    elif "n_solar_polygons" in df.columns:
        labels = (df["n_solar_polygons"] > 0).astype(int)
    else:
        raise InputDataError(
            "manifest has neither a 'label' nor an 'n_solar_polygons' column",
            where=str(src.path),
            fix="add a 'label' column (1 = solar, 0 = none)",
        )
    if src.split is not None:
        if "split" not in df.columns:
            raise InputDataError(
                "manifest has no 'split' column", where=str(src.path), fix="remove 'split'"
            )
        keep = df["split"].astype(str) == src.split
        df, labels = df[keep], labels[keep]
        if df.empty:
            raise InputDataError(
                f"no rows with split == '{src.split}'",
                where=str(src.path),
                fix="use one of the manifest's splits",
            )
    root = src.path.parent
    splits = df["split"].astype(str) if "split" in df.columns else pd.Series(None, index=df.index)
    masks = df["mask"] if "mask" in df.columns else pd.Series(None, index=df.index)
    gsd = _manifest_gsd(df, src.path)
    return [
        Chip(
            _manifest_image_path(root, s, str(img)),
            int(y),
            src.display_name,
            _manifest_mask_path(root, s, m),
            ground_m_per_px=g,
        )
        for img, s, y, m, g in zip(df["image"], splits, labels, masks, gsd, strict=True)
    ]


def _manifest_gsd(df: pd.DataFrame, where: Path) -> list[float | None]:
    """The optional ``ground_m_per_px`` column (metres per pixel), None where blank."""
    if "ground_m_per_px" not in df.columns:
        return [None] * len(df)
    values = pd.to_numeric(df["ground_m_per_px"], errors="coerce")
    if (values <= 0).any():
        raise InputDataError(
            "ground_m_per_px must be positive", where=str(where), fix="fix or blank the cells"
        )
    return [None if np.isnan(v) else float(v) for v in values]


def _manifest_mask_path(root: Path, split: str | None, mask: object) -> Path | None:
    # Shared chip sets keep masks in {split}/masks/; a blank cell means no mask.
    if mask is None or (isinstance(mask, float) and np.isnan(mask)) or not str(mask).strip():
        return None
    if split:
        nested = root / split / "masks" / str(mask)
        if nested.is_file():
            return nested
    return root / str(mask)


def pv_area_per_tile_m2(tiles: gpd.GeoDataFrame, panels: gpd.GeoDataFrame) -> pd.Series:
    """Area (m², EPSG:5070) of the union of ``panels`` inside each tile, indexed by tile_id.

    Args:
        tiles: the tiles, with ``tile_id`` and a CRS.
        panels: the PV truth polygons, with a CRS (overlaps are counted once).

    Returns:
        The PV area of each tile in m² (0 for a tile without PV), named ``pv_area_m2``.

    Raises:
        InputDataError: either frame has no CRS, or ``tiles`` has no ``tile_id`` column.
    """
    for name, gdf in (("tiles", tiles), ("panels", panels)):
        if gdf.crs is None:
            raise InputDataError(
                f"{name} have no CRS", where=name, fix="set the CRS (e.g. EPSG:4326)"
            )
    if "tile_id" not in tiles.columns:
        raise InputDataError("tiles have no 'tile_id' column", where="tiles", fix="add tile_id")
    t = tiles[["tile_id", "geometry"]].to_crs(EQUAL_AREA_CRS)
    p = panels[["geometry"]].to_crs(EQUAL_AREA_CRS)
    p = p[p.geometry.notna() & ~p.geometry.is_empty]
    if p.empty:
        return pd.Series(0.0, index=pd.Index(t["tile_id"], name="tile_id"), name="pv_area_m2")
    # Dissolve first so that overlapping truth polygons are not counted twice.
    union = gpd.GeoDataFrame(geometry=[p.geometry.make_valid().union_all()], crs=EQUAL_AREA_CRS)
    inter = gpd.overlay(t, union, how="intersection", keep_geom_type=True)
    area = inter.geometry.area.groupby(inter["tile_id"]).sum()
    out = area.reindex(t["tile_id"], fill_value=0.0)
    out.index.name = "tile_id"
    return out.rename("pv_area_m2")


def labels_from_truth(
    tiles: gpd.GeoDataFrame, panels: gpd.GeoDataFrame, min_pv_area_m2: float = 1.0
) -> pd.Series:
    """1 where a tile holds at least ``min_pv_area_m2`` of visible PV, else 0 (index tile_id).

    Args:
        tiles: the tiles, with ``tile_id`` and a CRS.
        panels: the (visible) PV truth polygons, with a CRS.
        min_pv_area_m2: smallest PV area that makes a tile positive, m².

    Returns:
        The label of each tile, named ``label``.

    Raises:
        InputDataError: either frame has no CRS, or ``tiles`` has no ``tile_id`` column.
    """
    area = pv_area_per_tile_m2(tiles, panels)
    return (area >= min_pv_area_m2).astype(int).rename("label")


def chips_from_scene(src: SceneSource) -> list[Chip]:
    """Tiles with status 'ok' from a scene's tile manifest, labelled from its PV truth.

    Args:
        src: the scene source (with ``masks``, each tile also gets a rasterised truth mask).

    Returns:
        The chips, in the manifest's row order.

    Raises:
        InputDataError: a file is missing or unreadable, the manifest lacks a needed column, or
            ``truth_visible_column`` is not in the truth.
    """
    for path in (src.path, src.truth_path):
        if not path.is_file():
            raise InputDataError("scene file not found", where=str(path), fix="check the path")
    try:
        tiles = gpd.read_file(src.path, layer=src.tiles_layer)
        panels = gpd.read_file(src.truth_path, layer=src.truth_layer)
    except Exception as err:  # pyogrio raises DataSourceError/DataLayerError/...
        raise InputDataError(
            f"cannot read the scene ({type(err).__name__}: {err})",
            where=f"{src.path} / {src.truth_path}",
            fix="check the file paths and layer names",
        ) from None
    needed = {"tile_id", "path", "status"} | (
        {"zoom", "tile_size_px", "x", "y"} if src.masks else set()
    )
    missing = needed - set(tiles.columns)
    if missing:
        raise InputDataError(
            f"tile manifest lacks columns {sorted(missing)}",
            where=f"{src.path} layer {src.tiles_layer}",
            fix="use a download-tiles manifest (tile_id, path, status, zoom, tile_size_px, x, y "
            "and geometry)",
        )
    if src.truth_visible_column is not None:
        if src.truth_visible_column not in panels.columns:
            raise InputDataError(
                f"truth has no column '{src.truth_visible_column}'",
                where=str(src.truth_path),
                fix="fix truth_visible_column",
            )
        panels = panels[panels[src.truth_visible_column].astype(bool)]
    tiles = tiles[tiles["status"] == "ok"]
    labels = labels_from_truth(tiles, panels, src.min_pv_area_m2)
    root = src.path.parent
    masks = scene_mask_files(src, tiles, panels) if src.masks else {}
    return [
        Chip(root / str(rel), int(labels.loc[tid]), src.display_name, masks.get(tid))
        for tid, rel in zip(tiles["tile_id"], tiles["path"], strict=True)
    ]


def truth_tile_mask(tile: Tile, geoms_3857: Sequence[Any], shape: tuple[int, int]) -> np.ndarray:
    """Boolean PV mask of ``tile`` at ``shape`` (rows, cols) from truth geometries in EPSG:3857.

    Args:
        tile: the web-map tile.
        geoms_3857: the truth geometries, EPSG:3857 metres.
        shape: (rows, cols) of the mask, px (the tile is resampled to it).

    Returns:
        The mask, True where a geometry covers a pixel.
    """
    h, w = shape
    if not geoms_3857:
        return np.zeros((h, w), bool)
    tr = tile.transform_3857 * tile.transform_3857.scale(tile.size_px / w, tile.size_px / h)
    out = rasterize(geoms_3857, out_shape=(h, w), transform=tr, fill=0, default_value=1,
                    dtype="uint8")  # fmt: skip
    return out.astype(bool)


def _truth_digest(src: SceneSource) -> str:
    h = hashlib.sha256(src.truth_path.read_bytes())
    h.update(f"|{src.truth_layer}|{src.truth_visible_column}".encode())
    return h.hexdigest()[:16]


def scene_mask_files(
    src: SceneSource, tiles: gpd.GeoDataFrame, panels: gpd.GeoDataFrame
) -> dict[Any, Path]:
    """Per-tile truth masks (PNG, 255 = PV, at the tile's pixel size) under the manifest's folder.

    Written once per truth file (the folder name is a digest of the truth file, layer and
    visibility column) and reused; each file is written atomically, so an interrupted run resumes.

    Args:
        src: the scene source.
        tiles: the tile manifest rows (``tile_id``, ``zoom``, ``tile_size_px``, ``x``, ``y``).
        panels: the (visible) PV truth polygons, with a CRS.

    Returns:
        The mask file of each tile, by tile_id.
    """
    folder = src.path.parent / "truth-masks" / _truth_digest(src)
    geoms = [g for g in panels.to_crs("EPSG:3857").geometry if g is not None and not g.is_empty]
    out: dict[Any, Path] = {}
    for r in tiles.itertuples(index=False):
        path = folder / f"{r.tile_id}.png"
        if not path.is_file():
            tile = Tile(int(r.zoom), int(r.tile_size_px), int(r.x), int(r.y))
            mask = truth_tile_mask(tile, geoms, (tile.size_px, tile.size_px))
            buf = io.BytesIO()
            Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
            atomic_write_bytes(path, buf.getvalue(), fsync=False)
        out[r.tile_id] = path
    return out


def _cap_per_class(chips: list[Chip], max_per_class: int | None, seed: int) -> list[Chip]:
    if max_per_class is None:
        return chips
    rng = np.random.default_rng(seed)
    out: list[Chip] = []
    for label in (0, 1):
        group = [c for c in chips if c.label == label]
        if len(group) > max_per_class:
            idx = np.sort(rng.choice(len(group), size=max_per_class, replace=False))
            group = [group[i] for i in idx]
        out += group
    return sorted(out, key=lambda c: str(c.path))


def load_source(src: ChipSource, *, seed: int = 0) -> list[Chip]:
    """All chips of one source (capped per class when asked); missing files are errors.

    Args:
        src: the source; its ``ground_m_per_px`` (m/px) fills chips that have none, its
            ``max_per_class`` caps each class by a seeded draw.
        seed: seed of the per-class draw.

    Returns:
        The chips (sorted by path when capped).

    Raises:
        InputDataError: the source yields no chips, a listed image does not exist, or the source
            cannot be read.
    """
    if isinstance(src, FolderSource):
        chips = chips_from_folder(src)
    elif isinstance(src, ImagesSource):
        chips = chips_from_images(src)
    elif isinstance(src, ManifestSource):
        chips = chips_from_manifest(src)
    else:
        chips = chips_from_scene(src)
    if not chips:
        raise InputDataError("no chips found", where=str(src.path), fix="check the source")
    missing = [c.path for c in chips if not c.path.is_file()]
    if missing:
        raise InputDataError(
            f"{len(missing)} listed image(s) do not exist, e.g. {missing[0]}",
            where=str(src.path),
            fix="fix the paths or remove the rows",
        )
    if src.ground_m_per_px is not None:
        chips = [
            c if c.ground_m_per_px else replace(c, ground_m_per_px=src.ground_m_per_px)
            for c in chips
        ]
    return _cap_per_class(chips, src.max_per_class, seed)


def load_sources(sources: Sequence[ChipSource], *, seed: int = 0) -> list[Chip]:
    """All chips of several sources, in order.

    Args:
        sources: the sources.
        seed: seed of the first source's per-class draw (the ``i``-th source uses ``seed + i``).

    Returns:
        The chips of every source, concatenated.

    Raises:
        InputDataError: a source cannot be read or yields no chips (see :func:`load_source`).
    """
    chips: list[Chip] = []
    for i, src in enumerate(sources):
        chips += load_source(src, seed=seed + i)
    return chips


def class_counts(chips: Sequence[Chip]) -> dict[str, int]:
    """Number of positive and negative chips.

    Args:
        chips: the chips.

    Returns:
        ``{"positive": n, "negative": n}``.
    """
    c = Counter(ch.label for ch in chips)
    return {"positive": c.get(1, 0), "negative": c.get(0, 0)}


def stratified_split(
    chips: Sequence[Chip], val_fraction: float, seed: int
) -> tuple[list[Chip], list[Chip]]:
    """Seeded split keeping each class's share (and each source's, when possible).

    Args:
        chips: the chips to split.
        val_fraction: share of the chips held out for validation, fraction 0-1.
        seed: seed of the split.

    Returns:
        The training chips and the validation chips.

    Raises:
        InputDataError: the chips cannot be split that way (e.g. too few of one class).
    """
    strata = [f"{c.source}|{c.label}" for c in chips]
    # Fall back to class-only strata when a source/class cell is too small to split.
    if min(Counter(strata).values()) < 2:
        strata = [str(c.label) for c in chips]
    try:
        train, val = train_test_split(
            list(chips), test_size=val_fraction, random_state=seed, stratify=strata
        )
    except ValueError as err:
        raise InputDataError(
            f"cannot make a stratified {val_fraction:.0%} validation split of "
            f"{len(chips)} chips {class_counts(chips)} ({err})",
            where="data.train",
            fix="add chips of the rare class, change data.val_fraction or list data.val sources",
        ) from None
    return train, val


# ---------------------------------------------------------------- torch dataset


class ChipDataset(Dataset):
    """Chips as ``{"image": CHW float in [-1,1], "label", "index", "error"}``.

    A chip that cannot be read comes back with ``error`` set (and a zero image) instead of
    raising inside a DataLoader worker, so the caller can raise one clear InputDataError.

    Args:
        chips: the chips.
        input_size_px: side of the square network input, px.
        rot90: rotate each image by a random multiple of 90 degrees.
        hflip: flip each image left-right with probability 0.5.
        min_side_px: smallest accepted chip width or height, px.
        normalize: ``{"mean": [...], "std": [...]}`` per channel on [0, 1] pixels (None: 0.5 and
            0.5, values in [-1, 1]).
    """

    def __init__(
        self,
        chips: Sequence[Chip],
        input_size_px: int,
        *,
        rot90: bool = False,
        hflip: bool = False,
        min_side_px: int = 16,
        normalize: dict[str, list[float]] | None = None,
    ) -> None:
        self.chips = list(chips)
        self.normalize = normalize
        self.input_size_px = input_size_px
        self.rot90 = rot90
        self.hflip = hflip
        self.min_side_px = min_side_px

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, index: int) -> dict:
        chip = self.chips[index]
        try:
            im = read_chip(chip.path, min_side_px=self.min_side_px)
            if chip.window is not None:
                im = im.crop(chip.window)
            image = preprocess(im, self.input_size_px, self.normalize)
            error = ("", "", "")
        except InputDataError as err:
            image = torch.zeros(3, self.input_size_px, self.input_size_px)
            error = (err.what, err.where or str(chip.path), err.fix or "")
        # Uses the worker's torch RNG, which the DataLoader seeds from its generator.
        if self.rot90:
            k = int(torch.randint(0, 4, (1,)))
            image = torch.rot90(image, k, dims=(1, 2))
        if self.hflip and bool(torch.randint(0, 2, (1,))):
            image = torch.flip(image, dims=(2,))
        return {
            "image": image,
            "label": chip.label,
            "index": index,
            "error": error[0],
            "error_where": error[1],
            "error_fix": error[2],
        }


def raise_batch_errors(batch: dict) -> None:
    """Raise (in the main process) the first chip error recorded in a collated batch.

    Args:
        batch: a collated batch of :class:`ChipDataset` samples.

    Raises:
        InputDataError: a chip of the batch could not be read.
    """
    for what, where, fix in zip(
        batch["error"], batch["error_where"], batch["error_fix"], strict=True
    ):
        if what:
            raise InputDataError(what, where=where, fix=fix)


def worker_context() -> multiprocessing.context.BaseContext:
    """Start DataLoader workers from a clean forkserver, not by forking this process.

    A plain fork inherits Prefect's at-exit hooks, which fail in the child (AssertionError in
    prefect's QueueService.drain): every worker then exits with code 1 and the DataLoader aborts.
    The forkserver preloads the data modules once, so workers still start quickly.

    Returns:
        The forkserver multiprocessing context.
    """
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["deepsolar.classifier.data", "deepsolar.classifier.predict"])
    return ctx


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose shuffling and worker seeds all come from ``seed``.

    Args:
        dataset: the chips (or cached features) to batch.
        batch_size: samples per batch.
        shuffle: draw a seeded permutation every pass.
        num_workers: worker processes (0: in this process; else from :func:`worker_context`).
        seed: seed of the loader's generator.
        drop_last: drop a last, smaller batch.
        pin_memory: pin batches for a fast copy to the GPU.

    Returns:
        The loader.
    """
    gen = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=gen,
        drop_last=drop_last,
        pin_memory=pin_memory,
        multiprocessing_context=worker_context() if num_workers > 0 else None,
    )
