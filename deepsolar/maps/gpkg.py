"""Run outputs for QGIS: one styled GeoPackage, PNG choropleths, CSV / Parquet tables.

The GeoPackage (version 1.2, so QGIS 3.x and older GDAL read it) holds the layers given, usually
``tiles``, ``panels``, ``systems``, ``tracts``, ``counties``, ``states``, plus a ``layer_styles``
table: one default QGIS style (QML) per layer, which QGIS applies when the layer is opened.

- Unit layers (those with the density field): graduated colour ramp (YlOrRd) on the density,
  with class breaks computed from the data (natural breaks by default, as in choropleths of the
  DeepSolar paper; quantile and equal interval available). Units with no value (nothing
  scanned) are not drawn.
- ``systems``: outlined (red outline, no fill), so the imagery below stays visible.
- ``panels``: filled orange; ``tiles``: grey outlines.
- Every layer: readable field aliases (name and unit) in the attribute table and forms.

QGIS only uses a ``layer_styles`` row as the default when ``f_table_schema`` is the empty string
(not NULL) and ``useAsDefault`` is true; both are written that way. Everything is written to a
temporary file next to the target and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from deepsolar.core.errors import InputDataError
from deepsolar.core.io import atomic_output, write_table_atomic
from deepsolar.maps.aggregate import DEFAULT_DENSITY_FIELD, pct_text

BreakMethod = Literal["jenks", "quantile", "equal"]
_QGIS_METHOD_ID = {"jenks": "Jenks", "quantile": "Quantile", "equal": "EqualInterval"}
GPKG_APPLICATION_ID = 0x47504B47  # "GPKG"
GPKG_USER_VERSION_1_2 = 10200
UNIT_LAYERS = ("tracts", "counties", "states")

# Readable names (with units) shown by QGIS instead of column names.
FIELD_ALIASES: dict[str, str] = {
    "GEOID": "GEOID (FIPS code)",
    "NAME": "Name",
    "tile_id": "Tile id",
    "zoom": "Zoom level",
    "tile_size_px": "Tile size (px)",
    "x": "Tile column",
    "y": "Tile row",
    "m_per_px": "Ground resolution (m/px)",
    "status": "Download status",
    "source": "Imagery source",
    "probability": "Solar probability",
    "is_positive": "Classified positive",
    "panel_id": "Panel piece id",
    "system_id": "Solar system id",
    "confidence": "Classifier confidence (area-weighted mean)",
    "confidence_max": "Classifier confidence (max)",
    "area_px": "Mask pixels",
    "area_m2": "Panel area (m²)",
    "capacity_kw": "Estimated capacity (kW)",
    "is_residential": "Residential",
    "system_class": "System class",
    "n_panels": "Panel pieces",
    "tile_count": "Tiles holding a system (distinct)",
    "tile_count_residential": "Tiles holding a residential system (distinct)",
    "tile_count_nonresidential": "Tiles holding a non-residential system (distinct)",
    "prob": "Solar probability",
    "panel_area_m2": "Panel area in tile (m²)",
    "n_tiles": "Scanned tiles",
    "scanned_area_m2": "Scanned area (m²)",
    "scan_status": "Scan status (scanned / partial / not scanned)",
    "scan_note": "Scan note",
    "data_label": "Data label",
    "lon": "Longitude",
    "lat": "Latitude",
    "solar_system_count": "Solar systems",
    "solar_system_count_residential": "Residential solar systems",
    "solar_system_count_nonresidential": "Non-residential solar systems",
    "total_panel_area": "Panel area (m²)",
    "total_panel_area_residential": "Residential panel area (m²)",
    "total_panel_area_nonresidential": "Non-residential panel area (m²)",
    "total_capacity_kw": "Estimated capacity (kW)",
    "total_area": "Unit area (sq mi)",
    "area_km2": "Unit area (km²)",
    "solar_panel_area_divided_by_area": "Residential panel density (m²/sq mi)",
    "panel_area_m2_per_mi2": "Panel density (m²/sq mi)",
    "panel_area_m2_per_km2": "Panel density (m²/km²)",
    "scanned_area_km2": "Scanned area (km²)",
    "scanned_fraction": "Scanned fraction of unit",
    "solar_panel_area_divided_by_scanned_area": "Residential panel density, scanned area (m²/sq mi)",
    "panel_area_m2_per_mi2_scanned": "Panel density, scanned area (m²/sq mi)",
    "panel_area_m2_per_km2_scanned": "Panel density, scanned area (m²/km²)",
    "solar_panel_area_per_capita": "Residential panel area per person (m²)",
    "panel_area_m2_per_capita": "Panel area per person (m²)",
    "number_of_solar_system_per_household": "Residential systems per household",
    "solar_system_count_per_household": "Systems per household",
    "population": "Population",
    "household_count": "Households",
    "panel_area_m2_lo95": "Panel area, whole unit, 95% interval low (m²)",
    "panel_area_m2_hi95": "Panel area, whole unit, 95% interval high (m²)",
    "solar_system_count_lo95": "Solar systems, whole unit, 95% interval low",
    "solar_system_count_hi95": "Solar systems, whole unit, 95% interval high",
    "panel_area_m2_corrected": "Panel area, whole unit, bias-corrected (m²)",
    "solar_system_count_corrected": "Solar systems, whole unit, bias-corrected",
}


# --------------------------------------------------------------------------- class breaks


def _jenks(x: np.ndarray, k: int) -> list[float]:
    """Fisher-Jenks optimal breaks of sorted ``x`` into ``k`` classes (dynamic programming)."""
    n = len(x)
    s1 = np.concatenate([[0.0], np.cumsum(x)])
    s2 = np.concatenate([[0.0], np.cumsum(x * x)])
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    cnt = (j - i + 1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ssd = (s2[j + 1] - s2[i]) - (s1[j + 1] - s1[i]) ** 2 / cnt  # class x[i..j]
    ssd = np.where(j >= i, np.maximum(ssd, 0.0), np.inf)
    cost = ssd[0].copy()  # one class covering x[0..j]
    back = np.zeros((k, n), dtype=np.int64)
    for c in range(1, k):
        prev = np.concatenate([[np.inf], cost[:-1]])  # best cost of x[0..i-1] in c classes
        total = prev[:, None] + ssd  # start the last class at i
        back[c] = np.argmin(total, axis=0)
        cost = total[back[c], np.arange(n)]
    ends = [n - 1]
    j_end = n - 1
    for c in range(k - 1, 0, -1):
        start = int(back[c, j_end])
        ends.append(start - 1)
        j_end = start - 1
    ends = sorted(e for e in ends if e >= 0)
    return [float(x[0])] + [float(x[e]) for e in ends]


def class_breaks(
    values: Sequence[float] | np.ndarray | pd.Series,
    k: int = 5,
    method: BreakMethod = "jenks",
    *,
    max_sample: int = 1000,
) -> list[float]:
    """Class edges (``len <= k + 1``, first = min, last = max) of the finite ``values``.

    ``jenks``: natural breaks (Fisher-Jenks, exact on up to ``max_sample`` values, on evenly
    spaced quantiles beyond); ``quantile``; ``equal`` interval. Duplicate edges are dropped, so
    zero-heavy data (many units without solar) gives fewer, distinct classes. Empty input: [].

    Args:
        values: The values to classify (NaN and inf ignored), in the field's unit.
        k: Number of classes wanted.
        method: ``jenks``, ``quantile`` or ``equal``.
        max_sample: Most values Fisher-Jenks runs on exactly.

    Returns:
        The class edges, ascending, in the values' unit.

    Raises:
        InputDataError: If ``method`` is unknown.
    """
    v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return []
    lo, hi = float(v.min()), float(v.max())
    uniq = np.unique(v)
    if len(uniq) <= k:
        edges = [lo, *(float(u) for u in uniq[1:])] if len(uniq) > 1 else [lo, hi]
        return edges
    if method == "equal":
        edges = list(np.linspace(lo, hi, k + 1))
    elif method == "quantile":
        edges = list(np.quantile(v, np.linspace(0, 1, k + 1)))
    elif method == "jenks":
        x = np.sort(v)
        if len(x) > max_sample:
            x = np.quantile(x, np.linspace(0, 1, max_sample))
        edges = _jenks(x, k)
    else:
        raise InputDataError(
            f"unknown class-break method {method!r}",
            where="class_breaks",
            fix="use 'jenks', 'quantile' or 'equal'",
        )
    edges[0], edges[-1] = lo, hi
    out = [edges[0]]
    for e in edges[1:]:
        if e > out[-1]:
            out.append(float(e))
    return out if len(out) > 1 else [lo, hi]


def ramp_colors(n: int, cmap: str = "YlOrRd") -> list[tuple[int, int, int, int]]:
    """``n`` RGBA colours (0-255) evenly spread over a matplotlib colour map.

    Args:
        n: Number of colours.
        cmap: Matplotlib colour map name.

    Returns:
        ``n`` (r, g, b, a) tuples, each channel 0-255.
    """
    from matplotlib import colormaps

    cm = colormaps[cmap]
    pos = [0.5] if n == 1 else np.linspace(0.1, 0.95, n)
    return [tuple(int(round(c * 255)) for c in cm(p)) for p in pos]  # type: ignore[misc]


# --------------------------------------------------------------------------- QML


def _rgba(c: Sequence[int]) -> str:
    return ",".join(str(int(v)) for v in c)


def _option_map(parent: ET.Element, props: Mapping[str, str]) -> None:
    """Symbol-layer properties in both QGIS encodings (Option map: 3.16+, prop: older)."""
    opt = ET.SubElement(parent, "Option", type="Map")
    for k, v in props.items():
        ET.SubElement(opt, "Option", name=k, value=str(v), type="QString")
    for k, v in props.items():
        ET.SubElement(parent, "prop", k=k, v=str(v))


def _symbol(
    parent: ET.Element,
    name: str,
    kind: str,
    fill: Sequence[int] | None,
    outline: Sequence[int],
    outline_width_mm: float,
) -> ET.Element:
    sym = ET.SubElement(
        parent,
        "symbol",
        type=kind,
        name=name,
        alpha="1",
        clip_to_extent="1",
        force_rhr="0",
    )
    if kind == "fill":
        lyr = ET.SubElement(sym, "layer", {"class": "SimpleFill"}, enabled="1", locked="0")
        lyr.set("pass", "0")
        _option_map(
            lyr,
            {
                "color": _rgba(fill or (0, 0, 0, 0)),
                "style": "solid" if fill is not None else "no",
                "outline_color": _rgba(outline),
                "outline_style": "solid",
                "outline_width": f"{outline_width_mm:g}",
                "outline_width_unit": "MM",
                "joinstyle": "bevel",
                "offset": "0,0",
                "offset_unit": "MM",
            },
        )
    elif kind == "line":
        lyr = ET.SubElement(sym, "layer", {"class": "SimpleLine"}, enabled="1", locked="0")
        lyr.set("pass", "0")
        _option_map(
            lyr,
            {
                "line_color": _rgba(fill or outline),
                "line_style": "solid",
                "line_width": f"{max(outline_width_mm, 0.4):g}",
                "line_width_unit": "MM",
            },
        )
    else:
        lyr = ET.SubElement(sym, "layer", {"class": "SimpleMarker"}, enabled="1", locked="0")
        lyr.set("pass", "0")
        _option_map(
            lyr,
            {
                "name": "circle",
                "color": _rgba(fill or (0, 0, 0, 0)),
                "outline_color": _rgba(outline),
                "outline_style": "solid",
                "outline_width": f"{outline_width_mm:g}",
                "outline_width_unit": "MM",
                "size": "2.4",
                "size_unit": "MM",
                "scale_method": "diameter",
            },
        )
    return sym


def _symbol_kind(gdf: gpd.GeoDataFrame) -> str:
    types = set(gdf.geometry.geom_type.dropna())
    if types and types <= {"Point", "MultiPoint"}:
        return "marker"
    if types and types <= {"LineString", "MultiLineString"}:
        return "line"
    return "fill"


def _qgis_root() -> ET.Element:
    return ET.Element(
        "qgis",
        version="3.22.0",
        styleCategories="AllStyleCategories",
        hasScaleBasedVisibilityFlag="0",
        minScale="100000000",
        maxScale="0",
    )


def _finish(root: ET.Element, columns: Sequence[str], aliases: Mapping[str, str]) -> str:
    ET.SubElement(root, "blendMode").text = "0"
    ET.SubElement(root, "featureBlendMode").text = "0"
    ET.SubElement(root, "layerOpacity").text = "1"
    al = ET.SubElement(root, "aliases")
    for i, col in enumerate(columns):
        ET.SubElement(al, "alias", field=col, index=str(i), name=aliases.get(col, ""))
    ET.indent(root, space=" ")
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(
        root, encoding="unicode"
    )


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 1:
        return f"{v:.1f}"
    return f"{v:.3g}"


def range_labels(edges: Sequence[float]) -> list[str]:
    """Legend labels ``"a – b"`` for consecutive class edges.

    Args:
        edges: Class edges, ascending.

    Returns:
        One label per class (``len(edges) - 1``).
    """
    return [
        _fmt(a) if a == b else f"{_fmt(a)} – {_fmt(b)}"
        for a, b in zip(edges[:-1], edges[1:], strict=False)
    ]


def graduated_qml(
    field: str,
    edges: Sequence[float],
    columns: Sequence[str],
    *,
    kind: str = "fill",
    method: BreakMethod = "jenks",
    cmap: str = "YlOrRd",
    aliases: Mapping[str, str] | None = None,
) -> str:
    """QML with a graduated-colour renderer on ``field`` using class ``edges``.

    Args:
        field: The attribute to colour by.
        edges: Class edges, ascending, in the field's unit.
        columns: The layer's attribute names (for the field configuration).
        kind: Symbol kind: ``fill``, ``line`` or ``marker``.
        method: Break method recorded in the style (``jenks``, ``quantile``, ``equal``).
        cmap: Matplotlib colour map name.
        aliases: Column -> display name in QGIS.

    Returns:
        The QML document text.
    """
    aliases = {**FIELD_ALIASES, **(aliases or {})}
    root = _qgis_root()
    r = ET.SubElement(
        root,
        "renderer-v2",
        type="graduatedSymbol",
        attr=field,
        graduatedMethod="GraduatedColor",
        symbollevels="0",
        forceraster="0",
        enableorderby="0",
        referencescale="-1",
    )
    if len(edges) < 2:
        edges = [0.0, 0.0]
    n = len(edges) - 1
    colors = ramp_colors(n, cmap)
    ranges = ET.SubElement(r, "ranges")
    for i, (lab, lo, hi) in enumerate(zip(range_labels(edges), edges[:-1], edges[1:], strict=True)):
        # repr(): shortest exact text, so the data's max is still inside the last class
        ET.SubElement(
            ranges, "range", symbol=str(i), lower=repr(lo), upper=repr(hi), label=lab, render="true"
        )
    symbols = ET.SubElement(r, "symbols")
    for i, c in enumerate(colors):
        _symbol(symbols, str(i), kind, c, (110, 110, 110, 255), 0.1 if kind == "fill" else 0.2)
    src = ET.SubElement(r, "source-symbol")
    _symbol(src, "0", kind, colors[0], (110, 110, 110, 255), 0.1)
    ramp = ET.SubElement(r, "colorramp", type="gradient", name="[source]")
    _option_map(
        ramp,
        {
            "color1": _rgba(colors[0]),
            "color2": _rgba(colors[-1]),
            "discrete": "0",
            "rampType": "gradient",
        },
    )
    cm = ET.SubElement(r, "classificationMethod", id=_QGIS_METHOD_ID[method])
    ET.SubElement(cm, "symmetricMode", enabled="0", symmetrypoint="0", astride="0")
    ET.SubElement(cm, "labelFormat", format="%1 - %2", labelprecision="1", trimtrailingzeroes="1")
    ET.SubElement(r, "rotation")
    ET.SubElement(r, "sizescale")
    return _finish(root, columns, aliases)


def single_qml(
    columns: Sequence[str],
    *,
    kind: str = "fill",
    fill: Sequence[int] | None = None,
    outline: Sequence[int] = (35, 35, 35, 255),
    outline_width_mm: float = 0.26,
    aliases: Mapping[str, str] | None = None,
) -> str:
    """QML with a single-symbol renderer (``fill=None``: outline only).

    Args:
        columns: The layer's attribute names.
        kind: Symbol kind: ``fill``, ``line`` or ``marker``.
        fill: Fill RGBA (0-255), or None for no fill.
        outline: Outline RGBA (0-255).
        outline_width_mm: Outline width in mm.
        aliases: Column -> display name in QGIS.

    Returns:
        The QML document text.
    """
    aliases = {**FIELD_ALIASES, **(aliases or {})}
    root = _qgis_root()
    r = ET.SubElement(
        root,
        "renderer-v2",
        type="singleSymbol",
        symbollevels="0",
        forceraster="0",
        enableorderby="0",
        referencescale="-1",
    )
    symbols = ET.SubElement(r, "symbols")
    _symbol(symbols, "0", kind, fill, outline, outline_width_mm)
    ET.SubElement(r, "rotation")
    ET.SubElement(r, "sizescale")
    return _finish(root, columns, aliases)


def _fill_layers(parent: ET.Element, name: str, layers: Sequence[Mapping[str, str]]) -> None:
    """A fill symbol made of several SimpleFill layers (e.g. a grey fill under a hatch)."""
    sym = ET.SubElement(
        parent, "symbol", type="fill", name=name, alpha="1", clip_to_extent="1", force_rhr="0"
    )
    for props in layers:
        lyr = ET.SubElement(sym, "layer", {"class": "SimpleFill"}, enabled="1", locked="0")
        lyr.set("pass", "0")
        full = {
            "color": "0,0,0,0",
            "style": "solid",
            "outline_color": "110,110,110,255",
            "outline_style": "solid",
            "outline_width": "0.1",
            "outline_width_unit": "MM",
            "joinstyle": "bevel",
            "offset": "0,0",
            "offset_unit": "MM",
            **props,
        }
        _option_map(lyr, full)


def _num(v: float) -> str:
    """A number for a QGIS expression: exact, never in exponent notation."""
    return np.format_float_positional(float(v), trim="-")


Rule = tuple[str | None, str, str | None]  # filter expression, legend label, symbol name


def rule_qml(
    columns: Sequence[str],
    symbols: Mapping[str, Any],
    *,
    header: str | None,
    rules: Sequence[Rule],
    other_rules: Sequence[Rule] = (),
    label_expression: str | None = None,
    aliases: Mapping[str, str] | None = None,
) -> str:
    """QML with a rule-based renderer.

    ``rules`` are nested under a ``header`` rule (no filter, no symbol: QGIS shows it as the
    legend's title line), then ``other_rules`` at the top level.

    Args:
        columns: The layer's attribute names.
        symbols: Symbol name -> callable ``(parent, name)`` that writes it.
        header: Legend title of the nested rules; None: the rules at the top level.
        rules: ``(filter, label, symbol name)`` rules under the header.
        other_rules: Rules at the top level after the header.
        label_expression: Map labels from this QGIS expression (NULL: no label); None: no
            labels.
        aliases: Column -> display name in QGIS.

    Returns:
        The QML document text.
    """
    aliases = {**FIELD_ALIASES, **(aliases or {})}
    root = _qgis_root()
    if label_expression:
        root.set("labelsEnabled", "1")
    r = ET.SubElement(
        root,
        "renderer-v2",
        type="RuleRenderer",
        symbollevels="0",
        forceraster="0",
        enableorderby="0",
        referencescale="-1",
    )
    top = ET.SubElement(r, "rules", key="{deepsolar-root}")
    counter = iter(range(10_000))

    def add(parent: ET.Element, rule: Rule) -> None:
        flt, label, sym = rule
        el = ET.SubElement(parent, "rule", key=f"{{deepsolar-rule-{next(counter)}}}", label=label)
        if flt:
            el.set("filter", flt)
        if sym is not None:
            el.set("symbol", sym)

    if header is not None:
        head = ET.SubElement(top, "rule", key="{deepsolar-header}", label=header)
        for rule in rules:
            add(head, rule)
    else:
        for rule in rules:
            add(top, rule)
    for rule in other_rules:
        add(top, rule)
    sym_el = ET.SubElement(r, "symbols")
    for name, writer in symbols.items():
        writer(sym_el, name)
    if label_expression:
        _simple_labeling(root, label_expression)
    return _finish(root, columns, aliases)


def _simple_labeling(root: ET.Element, expression: str) -> None:
    """Simple QGIS labelling: dark text with a white halo, over the polygon's inside point."""
    lab = ET.SubElement(root, "labeling", type="simple")
    st = ET.SubElement(lab, "settings", calloutType="simple")
    ts = ET.SubElement(
        st,
        "text-style",
        fieldName=expression,
        isExpression="1",
        fontFamily="Sans Serif",
        fontSize="7",
        fontSizeUnit="Point",
        fontWeight="50",
        fontItalic="1",
        namedStyle="Italic",
        textColor="50,50,50,255",
        textOpacity="1",
        multilineHeight="1",
        previewBkgrdColor="255,255,255,255",
        blendMode="0",
        allowHtml="0",
        capitalization="0",
    )
    ET.SubElement(
        ts,
        "text-buffer",
        bufferDraw="1",
        bufferSize="0.8",
        bufferSizeUnits="MM",
        bufferColor="255,255,255,255",
        bufferOpacity="0.85",
        bufferNoFill="1",
        bufferJoinStyle="128",
        bufferBlendMode="0",
    )
    ET.SubElement(st, "text-format", wrapChar="", autoWrapLength="28", multilineAlign="1")
    ET.SubElement(
        st, "placement", placement="1", centroidInside="1", centroidWhole="0", fitInPolygonOnly="0"
    )
    ET.SubElement(
        st,
        "rendering",
        displayAll="0",
        obstacle="0",
        upsidedownLabels="0",
        scaleVisibility="0",
        limitNumLabels="0",
    )


def _plain_fill(fill: Sequence[int] | None, outline: Sequence[int], width: float) -> Any:
    def w(parent: ET.Element, name: str) -> None:
        _symbol(parent, name, "fill", fill, outline, width)

    return w


def _layered_fill(*layers: Mapping[str, str]) -> Any:
    def w(parent: ET.Element, name: str) -> None:
        _fill_layers(parent, name, layers)

    return w


PARTIAL_FILL = "225,225,225,255"
PARTIAL_HATCH = "150,150,150,255"


def choropleth_qml(
    field: str,
    edges: Sequence[float],
    columns: Sequence[str],
    *,
    min_scanned_fraction: float | None = None,
    no_value_rows: bool = False,
    cmap: str = "YlOrRd",
    aliases: Mapping[str, str] | None = None,
) -> str:
    """Unit layers: a rule-based choropleth of ``field``.

    Its legend starts with the field's name and unit, then one rule per class, then the units
    without a density: partially scanned ones grey and hatched (and labelled on the map with
    their ``scan_note``), unscanned ones outlined only.

    Args:
        field: The density attribute to colour by.
        edges: Class edges, ascending, in the field's unit.
        columns: The layer's attribute names.
        min_scanned_fraction: Fraction 0-1 from which a unit counts as scanned (shown in the
            legend); None: not shown.
        no_value_rows: Add the rules for units without a density.
        cmap: Matplotlib colour map name.
        aliases: Column -> display name in QGIS.

    Returns:
        The QML document text.
    """
    aliases = {**FIELD_ALIASES, **(aliases or {})}
    alias = aliases.get(field) or field
    header = f"{alias}\nfield: {field}"
    q = f'"{field}"'
    rules: list[Rule] = []
    symbols: dict[str, Any] = {}
    if len(edges) >= 2:
        colors = ramp_colors(len(edges) - 1, cmap)
        for i, (lab, lo, hi) in enumerate(
            zip(range_labels(edges), edges[:-1], edges[1:], strict=True)
        ):
            op = ">=" if i == 0 else ">"
            rules.append((f"{q} {op} {_num(lo)} AND {q} <= {_num(hi)}", lab, f"c{i}"))
            symbols[f"c{i}"] = _plain_fill(colors[i], (110, 110, 110, 255), 0.1)
    else:  # the header still names the field; one line says why there are no classes
        rules.append((None, "(no unit scanned enough for a density)", None))
    other: list[Rule] = []
    need = (
        f"< {100 * min_scanned_fraction:g}% of area scanned"
        if min_scanned_fraction is not None
        else "partly scanned"
    )
    if "scan_status" in columns:
        other.append(
            (
                f"{q} IS NULL AND \"scan_status\" = 'partial'",
                f"partially scanned ({need}): no density",
                "partial",
            )
        )
        other.append(
            (f"{q} IS NULL AND \"scan_status\" = 'not scanned'", "not scanned: no density", "none")
        )
        if no_value_rows:  # scanned, yet no value (e.g. no population for a per-capita field)
            other.append((f"{q} IS NULL AND \"scan_status\" = 'scanned'", "no value", "novalue"))
    else:
        other.append((f"{q} IS NULL", "no data / not scanned", "partial"))
    # one symbol per rule: QGIS takes each symbol out of the map when it reads a rule
    symbols["partial"] = _layered_fill(
        {"color": PARTIAL_FILL, "outline_color": "150,150,150,255", "outline_width": "0.15"},
        {"color": PARTIAL_HATCH, "style": "b_diagonal", "outline_style": "no"},
    )
    symbols["none"] = _plain_fill(None, (170, 170, 170, 255), 0.1)
    symbols["novalue"] = _plain_fill(None, (120, 120, 120, 255), 0.1)
    label = (
        'CASE WHEN "scan_status" = \'partial\' THEN "scan_note" END'
        if {"scan_status", "scan_note"} <= set(columns)
        else None
    )
    return rule_qml(
        columns,
        symbols,
        header=header,
        rules=rules,
        other_rules=other,
        label_expression=label,
        aliases=aliases,
    )


def tiles_qml(columns: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    """Tiles: classified-positive tiles orange, negative ones thin grey outlines.

    Args:
        columns: The layer's attribute names.
        aliases: Column -> display name in QGIS.

    Returns:
        The QML document text.
    """
    return rule_qml(
        columns,
        {
            "pos": _plain_fill((253, 174, 107, 110), (230, 85, 13, 255), 0.35),
            "neg": _plain_fill(None, (150, 150, 150, 255), 0.12),
            "na": _plain_fill(None, (90, 90, 200, 255), 0.12),
        },
        header="Tiles: classifier call [is_positive]",
        rules=[
            ('"is_positive"', "classified positive (solar)", "pos"),
            ('NOT "is_positive"', "classified negative", "neg"),
            ('"is_positive" IS NULL', "not classified", "na"),
        ],
        aliases=aliases,
    )


def footprint_qml(columns: Sequence[str], aliases: Mapping[str, str] | None = None) -> str:
    """The scanned footprint: blue outline over a faint blue fill.

    Args:
        columns: The layer's attribute names.
        aliases: Column -> display name in QGIS.

    Returns:
        The QML document text.
    """
    return rule_qml(
        columns,
        {
            "scan": _layered_fill(
                {
                    "color": "49,130,189,45",
                    "outline_color": "8,81,156,255",
                    "outline_width": "0.5",
                    "outline_style": "dash",
                }
            )
        },
        header=None,
        rules=[(None, "scanned area (union of the scanned tiles)", "scan")],
        aliases=aliases,
    )


@dataclass(frozen=True)
class _SingleStyle:
    """A single-symbol default style.

    Attributes:
        polygon_fill: Fill RGBA (0-255) of polygons, or None for outlines only.
        symbol_fill: Fill RGBA (0-255) of line and point symbols.
        outline: Outline RGBA (0-255).
        outline_width_mm: Outline width in mm.
        description: The style's one-line description.
    """

    polygon_fill: tuple[int, int, int, int] | None
    symbol_fill: tuple[int, int, int, int]
    outline: tuple[int, int, int, int]
    outline_width_mm: float
    description: str


# Layer name -> its single-symbol default style; any other layer gets _FALLBACK_STYLE.
_SINGLE_STYLES = {
    "systems": _SingleStyle(
        polygon_fill=None,
        symbol_fill=(227, 26, 28, 200),
        outline=(227, 26, 28, 255),
        outline_width_mm=0.6,
        description="systems outlined in red",
    ),
    "panels": _SingleStyle(
        polygon_fill=(253, 141, 60, 190),
        symbol_fill=(253, 141, 60, 190),
        outline=(166, 54, 3, 255),
        outline_width_mm=0.15,
        description="panel pieces filled orange",
    ),
}
_FALLBACK_STYLE = _SingleStyle(
    polygon_fill=None,
    symbol_fill=(120, 120, 120, 255),
    outline=(120, 120, 120, 255),
    outline_width_mm=0.2,
    description="grey outlines",
)


def default_style(
    name: str,
    gdf: gpd.GeoDataFrame,
    *,
    density_field: str = DEFAULT_DENSITY_FIELD,
    k: int = 5,
    method: BreakMethod = "jenks",
    aliases: Mapping[str, str] | None = None,
) -> tuple[str, str]:
    """(QML, description) of the default style for layer ``name``.

    Args:
        name: The layer name (``panels``, ``systems``, ``tiles``, a unit layer ...).
        gdf: The layer's data (its columns, geometry type and values for class breaks).
        density_field: The unit layers' attribute to colour by.
        k: Number of classes.
        method: ``jenks``, ``quantile`` or ``equal``.
        aliases: Column -> display name in QGIS.

    Returns:
        The QML text and a one-line description of the style.
    """
    cols = [c for c in gdf.columns if c != gdf.geometry.name]
    kind = _symbol_kind(gdf)
    if density_field in gdf.columns:
        edges = class_breaks(gdf[density_field], k, method)
        if kind != "fill":
            qml = graduated_qml(
                density_field, edges, cols, kind=kind, method=method, aliases=aliases
            )
            return qml, f"graduated ({method}, {max(len(edges) - 1, 1)} classes) on {density_field}"
        thr = gdf.attrs.get("min_scanned_fraction")
        no_value = False
        if "scan_status" in gdf.columns:
            no_value = bool((gdf[density_field].isna() & (gdf["scan_status"] == "scanned")).any())
        qml = choropleth_qml(
            density_field,
            edges,
            cols,
            min_scanned_fraction=thr,
            no_value_rows=no_value,
            aliases=aliases,
        )
        return qml, (
            f"rule-based choropleth ({method}, {max(len(edges) - 1, 1)} classes) on "
            f"{density_field}; partially scanned units hatched grey and labelled"
        )
    if name == "scan_footprint" and kind == "fill":
        return footprint_qml(cols, aliases), "scanned footprint outlined in blue"
    if name == "tiles" and "is_positive" in gdf.columns and kind == "fill":
        return tiles_qml(cols, aliases), "positive tiles orange, negative tiles grey outlines"
    style = _SINGLE_STYLES.get(name, _FALLBACK_STYLE)
    qml = single_qml(
        cols,
        kind=kind,
        fill=style.polygon_fill if kind == "fill" else style.symbol_fill,
        outline=style.outline,
        outline_width_mm=style.outline_width_mm,
        aliases=aliases,
    )
    return qml, style.description


# --------------------------------------------------------------------------- writing


def _for_gdal(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Column types GDAL writes faithfully: plain strings, no pandas NA, no infinities."""
    out = gdf.copy()
    for col in out.columns:
        if col == out.geometry.name:
            continue
        s = out[col]
        if isinstance(s.dtype, pd.CategoricalDtype) or isinstance(s.dtype, pd.StringDtype):
            out[col] = s.astype(object).where(s.notna(), None)
        elif pd.api.types.is_bool_dtype(s.dtype) and s.dtype != bool:
            out[col] = s.astype(object).where(s.notna(), None) if s.isna().any() else s.astype(bool)
        elif pd.api.types.is_extension_array_dtype(s.dtype) and pd.api.types.is_integer_dtype(
            s.dtype
        ):
            out[col] = s.astype(float) if s.isna().any() else s.astype(np.int64)
        elif pd.api.types.is_float_dtype(s.dtype):
            out[col] = s.replace([np.inf, -np.inf], np.nan)
    return out


def _geometry_type(gdf: gpd.GeoDataFrame) -> str:
    types = set(gdf.geometry.geom_type.dropna())
    if not types or types <= {"Polygon", "MultiPolygon"}:
        return "MultiPolygon"
    if types <= {"Point"}:
        return "Point"
    if types <= {"Point", "MultiPoint"}:
        return "MultiPoint"
    if types <= {"LineString", "MultiLineString"}:
        return "MultiLineString"
    return "Unknown"


def _check_layers(layers: Mapping[str, gpd.GeoDataFrame], where: str) -> None:
    if not layers:
        raise InputDataError("no layers to write", where=where, fix="pass at least one layer")
    for name, gdf in layers.items():
        if not isinstance(gdf, gpd.GeoDataFrame):
            raise InputDataError(
                f"layer {name!r} is a {type(gdf).__name__}, not a GeoDataFrame",
                where=where,
                fix="pass GeoDataFrames (tables without geometry go to write_tables)",
            )
        if gdf.crs is None:
            raise InputDataError(
                f"layer {name!r} has no CRS", where=where, fix="set its CRS (e.g. EPSG:4326)"
            )
        if not name or name == "layer_styles" or name.startswith("gpkg_"):
            raise InputDataError(
                f"invalid layer name {name!r}",
                where=where,
                fix="use names like tiles, panels, systems, tracts",
            )


def write_run_geopackage(
    path: str | Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    *,
    styles: Mapping[str, str] | None = None,
    density_field: str = DEFAULT_DENSITY_FIELD,
    k: int = 5,
    method: BreakMethod = "jenks",
    aliases: Mapping[str, str] | None = None,
    data_label: str | None = None,
    note: str | None = None,
    provenance: Mapping[str, str] | None = None,
) -> Path:
    """Write ``layers`` (name -> GeoDataFrame) to one GeoPackage 1.2 with default QGIS styles.

    ``styles`` overrides the generated QML of named layers. Polygon layers are written as
    MultiPolygon (one geometry type per layer, as the format wants). Atomic: temp file + rename.

    ``data_label`` (e.g. ``"SYNTHETIC"``) marks the file itself: a ``data_label`` column in every
    layer, ``gpkg_contents.description`` of every layer starting with the label, the layer
    identifier ``"{name} ({label})"``, and ``gpkg_metadata`` records (GDAL metadata: one for the
    whole GeoPackage, one per layer) linked through ``gpkg_metadata_reference``. ``note`` and
    ``provenance`` (key -> text) go into the same descriptions / metadata.

    Args:
        path: The ``.gpkg`` file to write.
        layers: Layer name -> GeoDataFrame (with a CRS).
        styles: Layer name -> QML overriding the default style.
        density_field: The unit layers' attribute the default style colours by.
        k: Number of classes of the default choropleth styles.
        method: ``jenks``, ``quantile`` or ``equal``.
        aliases: Column -> display name in QGIS.
        data_label: Label marking the data (e.g. ``"SYNTHETIC"``), or None.
        note: A note for the descriptions and metadata, or None.
        provenance: Where the figures came from (key -> text), or None.

    Returns:
        The path written.

    Raises:
        InputDataError: If a layer is not a GeoDataFrame, has no CRS or an invalid name, or the
            written file fails its check.
    """
    out = Path(path)
    _check_layers(layers, str(out))
    label = (data_label or "").strip() or None
    ds_meta = _dataset_metadata(label, note, provenance)
    # GDAL creates the GeoPackage itself (create=False)
    with atomic_output(out, suffix=".tmp.gpkg", create=False) as tmp:
        style_rows = []
        for i, (name, gdf) in enumerate(layers.items()):
            gdf = _write_layer(tmp, name, gdf, label, note, ds_meta if i == 0 else None)
            if styles and name in styles:
                qml, desc = styles[name], "custom style"
            else:
                qml, desc = default_style(
                    name, gdf, density_field=density_field, k=k, method=method, aliases=aliases
                )
            style_rows.append((name, qml, desc))
        _write_layer_styles(tmp, style_rows)
        _check_written(tmp, list(layers))
    return out


def _dataset_metadata(
    label: str | None, note: str | None, provenance: Mapping[str, str] | None
) -> dict[str, str]:
    ds_meta = {"PRODUCER": "deepsolar"}
    if label:
        ds_meta["DATA_LABEL"] = label
    if note:
        ds_meta["NOTE"] = note
    for key, val in (provenance or {}).items():
        ds_meta["SOURCE_" + "".join(c if c.isalnum() else "_" for c in key.upper())] = str(val)
    return ds_meta


def _write_layer(
    tmp: Path,
    name: str,
    gdf: gpd.GeoDataFrame,
    label: str | None,
    note: str | None,
    ds_meta: dict[str, str] | None,
) -> gpd.GeoDataFrame:
    """One layer with its description and metadata.

    ``ds_meta`` only with the first layer (it creates the file as a GeoPackage 1.2). Returns the
    layer as written (with ``data_label``).
    """
    import pyogrio

    if label:
        gdf = gdf.assign(data_label=label)
    desc = f"deepsolar {name} layer" + (f"; {note}" if note else "")
    if "panel_area_m2_lo95" in gdf.columns:
        desc += (
            "; panel_area_m2_lo95/hi95, solar_system_count_lo95/hi95: 95% interval of "
            "the unit's true total (detector precision/recall and partial-scan sampling)"
        )
    layer_options = {"SPATIAL_INDEX": "YES", "DESCRIPTION": desc}
    if label:
        layer_options["DESCRIPTION"] = f"{label}: {desc}"
        layer_options["IDENTIFIER"] = f"{name} ({label})"
    first = ds_meta is not None
    pyogrio.write_dataframe(
        _for_gdal(gdf),
        tmp,
        layer=name,
        driver="GPKG",
        geometry_type=_geometry_type(gdf),
        promote_to_multi=_geometry_type(gdf).startswith("Multi"),
        dataset_options={"VERSION": "1.2"} if first else None,
        layer_options=layer_options,
        dataset_metadata=ds_meta if first else None,
        layer_metadata={"DATA_LABEL": label} if label else None,
    )
    return gdf


def _write_layer_styles(tmp: Path, style_rows: list[tuple[str, str, str]]) -> None:
    """The ``layer_styles`` table QGIS reads: each layer's QML, used as its default style."""
    import pyogrio

    with sqlite3.connect(tmp) as con:
        geom_cols = dict(con.execute("SELECT table_name, column_name FROM gpkg_geometry_columns"))
    con.close()
    now = pd.Timestamp(dt.datetime.now(dt.UTC))
    n = len(style_rows)
    table = pd.DataFrame(
        {
            "f_table_catalog": [""] * n,
            # '' and not NULL: otherwise QGIS does not pick the row up as the default
            "f_table_schema": [""] * n,
            "f_table_name": [r[0] for r in style_rows],
            "f_geometry_column": [geom_cols.get(r[0], "geom") for r in style_rows],
            "styleName": [r[0] for r in style_rows],
            "styleQML": [r[1] for r in style_rows],
            "styleSLD": [""] * n,
            "useAsDefault": [True] * n,
            "description": [f"deepsolar default: {r[2]}" for r in style_rows],
            "owner": [""] * n,
            "ui": [None] * n,
            "update_time": [now] * n,
        }
    )
    pyogrio.write_dataframe(
        table, tmp, layer="layer_styles", driver="GPKG", layer_options={"FID": "id"}
    )


def _check_written(path: Path, names: list[str]) -> None:
    con = sqlite3.connect(path)
    try:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT table_name FROM gpkg_contents")}
    finally:
        con.close()
    missing = set(names) - tables
    if app_id != GPKG_APPLICATION_ID or version != GPKG_USER_VERSION_1_2 or missing:
        raise InputDataError(
            f"GeoPackage check failed (application_id {app_id:#x}, version {version}, "
            f"missing layers {sorted(missing)})",
            where=str(path),
            fix="report this: GDAL wrote an unexpected file",
        )


# --------------------------------------------------------------------------- maps and tables


def write_choropleth_png(
    units: gpd.GeoDataFrame,
    path: str | Path,
    *,
    field: str = DEFAULT_DENSITY_FIELD,
    title: str | None = None,
    note: str | None = None,
    k: int = 5,
    method: BreakMethod = "jenks",
    dpi: int = 150,
    footprint: gpd.GeoDataFrame | gpd.GeoSeries | None = None,
) -> Path:
    """A PNG choropleth of ``field`` with the same classes and colours as the QGIS style.

    Units without a value are drawn by why: partially scanned ones (``scan_status`` 'partial')
    hatched grey, labelled with their scanned percentage (the 25 largest); unscanned ones
    outlined only. ``footprint`` (the ``scan_footprint`` layer) is drawn as a blue outline, with a
    marker at its centre when it is too small to see at the map's scale.

    Args:
        units: The unit layer.
        path: The ``.png`` file to write.
        field: The attribute to colour by.
        title: The map title; None: the field's name.
        note: A note printed under the map, or None.
        k: Number of classes.
        method: ``jenks``, ``quantile`` or ``equal``.
        dpi: Resolution in dots per inch.
        footprint: The scanned footprint to outline, or None.

    Returns:
        The path written.

    Raises:
        InputDataError: If the units have no column ``field``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    if field not in units.columns:
        raise InputDataError(
            f"layer has no column {field!r}",
            where=str(out),
            fix="aggregate the systems first (deepsolar.maps.aggregate.aggregate_systems)",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    gdf = units.to_crs("EPSG:4326") if units.crs is not None else units
    vals = pd.to_numeric(gdf[field], errors="coerce").replace([np.inf, -np.inf], np.nan)
    fig, ax = plt.subplots(figsize=(8, 7))
    handles = _draw_classes(ax, gdf, vals, class_breaks(vals, k, method))
    handles += _draw_missing(
        ax, gdf, vals.isna().to_numpy(), units.attrs.get("min_scanned_fraction")
    )
    w, s, e, n_ = gdf.total_bounds
    if footprint is not None and len(footprint):
        handles += _draw_footprint(ax, footprint, (w, s, e, n_))
    ax.set_aspect(1 / max(np.cos(np.radians((s + n_) / 2)), 0.1))
    ax.set_axis_off()
    label = FIELD_ALIASES.get(field, field)
    ax.set_title(title or label, fontsize=12)
    if handles:
        ax.legend(
            handles=handles,
            title=label,
            loc="center left",
            bbox_to_anchor=(1.01, 0.5),
            fontsize=8,
            title_fontsize=8,
            frameon=False,
        )
    if note:
        ax.text(0.0, -0.01, note, transform=ax.transAxes, va="top", fontsize=7, color="#444444")
    try:
        with atomic_output(out, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    finally:
        plt.close(fig)
    return out


def _draw_classes(ax: Any, gdf: gpd.GeoDataFrame, vals: pd.Series, edges: list[float]) -> list:
    """Fill each unit with a value in its class colour; the legend patches of the classes."""
    from matplotlib.patches import Patch

    if not edges:
        return []
    n = len(edges) - 1
    colors = [tuple(c / 255 for c in rgba) for rgba in ramp_colors(n)]
    cls = np.clip(np.searchsorted(edges, vals.to_numpy(), side="left") - 1, 0, n - 1)
    for i in range(n):
        sel = (cls == i) & vals.notna().to_numpy()
        if sel.any():
            gdf[sel].plot(ax=ax, color=colors[i], edgecolor="#6e6e6e", linewidth=0.15)
    return [
        Patch(facecolor=c, edgecolor="#6e6e6e", label=lab)
        for c, lab in zip(colors, range_labels(edges), strict=True)
    ]


def _draw_missing(ax: Any, gdf: gpd.GeoDataFrame, missing: np.ndarray, thr: float | None) -> list:
    """Units without a value, drawn by why; returns their legend patches.

    Partially scanned ones hatched and labelled, the rest outlined.
    """
    from matplotlib.patches import Patch

    if "scan_status" in gdf.columns:
        status = gdf["scan_status"].astype(str).to_numpy()
        partial = missing & (status == "partial")
        unscanned = missing & (status == "not scanned")
        other = missing & ~partial & ~unscanned
    else:
        partial, unscanned, other = missing, np.zeros_like(missing), np.zeros_like(missing)
    handles = []
    hatch_kw = {"facecolor": "#e1e1e1", "edgecolor": "#969696", "hatch": "///"}
    if partial.any():
        gdf[partial].plot(ax=ax, linewidth=0.15, **hatch_kw)
        need = f"< {100 * thr:g}% of area scanned" if thr is not None else "partly scanned"
        handles.append(Patch(**hatch_kw, label=f"partially scanned ({need}): no density"))
        if "scanned_fraction" in gdf.columns:
            _label_scanned_fraction(ax, gdf[partial])
    if unscanned.any() or other.any():
        gdf[unscanned | other].plot(ax=ax, facecolor="white", edgecolor="#aaaaaa", linewidth=0.15)
        handles.append(
            Patch(facecolor="white", edgecolor="#aaaaaa", label="not scanned / no value")
        )
    return handles


def _label_scanned_fraction(ax: Any, part: gpd.GeoDataFrame) -> None:
    """Label the 25 largest partially scanned units with their scanned share (more overlap)."""
    part = part.loc[part.to_crs(6933).area.sort_values(ascending=False).index[:25]]
    pts = part.geometry.representative_point()
    fr = pd.to_numeric(part["scanned_fraction"], errors="coerce")
    for pt, f in zip(pts, fr, strict=True):
        ax.annotate(
            f"{_pct_label(f)} scanned",
            (pt.x, pt.y),
            ha="center",
            va="center",
            fontsize=6,
            style="italic",
            color="#333333",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75},
        )


def _draw_footprint(
    ax: Any,
    footprint: gpd.GeoDataFrame | gpd.GeoSeries,
    bounds: tuple[float, float, float, float],
) -> list:
    """The scan footprint as a blue outline, ringed when too small to see; its legend patch."""
    from matplotlib.patches import Patch

    w, s, e, n_ = bounds
    fp = footprint.to_crs("EPSG:4326") if footprint.crs is not None else footprint
    fp = gpd.GeoSeries(fp.geometry if isinstance(fp, gpd.GeoDataFrame) else fp)
    fp = fp[~fp.is_empty]
    if not len(fp):
        return []
    fp.plot(ax=ax, facecolor=(0.19, 0.51, 0.74, 0.18), edgecolor="#08519c", linewidth=0.9)
    # too small to see at this scale: under 0.2% of the map's area
    tiny = float(shapely.area(fp.values).sum()) < 0.002 * max((e - w) * (n_ - s), 1e-18)
    lab = "scanned area (union of scanned tiles)"
    if tiny:
        fw, fs, fe, fn = fp.total_bounds
        ax.plot((fw + fe) / 2, (fs + fn) / 2, marker="o", ms=14, mfc="none", mec="#08519c",
                mew=1.6)  # fmt: skip
        lab += ", ringed: too small to see here"
    return [Patch(facecolor=(0.19, 0.51, 0.74, 0.18), edgecolor="#08519c", label=lab)]


def _pct_label(frac: float) -> str:
    return pct_text(frac) if np.isfinite(frac) else "?%"


def write_tables(
    out_dir: str | Path,
    layers: Mapping[str, gpd.GeoDataFrame | pd.DataFrame],
    *,
    formats: Sequence[Literal["csv", "parquet"]] = ("csv", "parquet"),
) -> dict[str, list[Path]]:
    """Each layer's attributes (no geometry) as ``{name}.csv`` / ``{name}.parquet``, atomically.

    Args:
        out_dir: The tables folder; created if missing.
        layers: Layer name -> frame.
        formats: ``csv`` and/or ``parquet``.

    Returns:
        Layer name -> the files written.

    Raises:
        InputDataError: If a format is unknown.
    """
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    for name, frame in layers.items():
        df = pd.DataFrame(frame)
        if isinstance(frame, gpd.GeoDataFrame):
            df = df.drop(columns=[frame.geometry.name])
        df = df.replace([np.inf, -np.inf], np.nan)
        paths = []
        for fmt in formats:
            if fmt not in ("csv", "parquet"):
                raise InputDataError(
                    f"unknown table format {fmt!r}", where=str(d), fix="use 'csv' or 'parquet'"
                )
            paths.append(write_table_atomic(df, d / f"{name}.{fmt}", fmt=fmt))
        written[name] = paths
    return written


def write_run_outputs(
    out_dir: str | Path,
    layers: Mapping[str, gpd.GeoDataFrame],
    *,
    name: str = "deepsolar",
    density_field: str = DEFAULT_DENSITY_FIELD,
    title: str | None = None,
    note: str | None = None,
    k: int = 5,
    method: BreakMethod = "jenks",
    data_label: str | None = None,
    provenance: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Everything a run delivers, in ``out_dir``.

    That is ``{name}.gpkg``, ``maps/{layer}.png`` for each unit layer with ``density_field``
    (with the ``scan_footprint`` layer drawn on it when there is one), and
    ``tables/{layer}.csv|parquet``. ``data_label`` (e.g. "SYNTHETIC") labels the GeoPackage,
    every table (column ``data_label``) and the map titles.

    Args:
        out_dir: The output folder.
        layers: Layer name -> GeoDataFrame.
        name: File name stem of the GeoPackage.
        density_field: The unit layers' attribute the maps and styles colour by.
        title: Map title prefix, or None.
        note: A note for the maps and the GeoPackage, or None.
        k: Number of classes.
        method: ``jenks``, ``quantile`` or ``equal``.
        data_label: Label marking the data, or None.
        provenance: Where the figures came from (key -> text), or None.

    Returns:
        The paths, the layer names and the provenance given.

    Raises:
        InputDataError: If a layer cannot be written (no CRS, bad name, missing field).
    """
    d = Path(out_dir)
    gpkg = write_run_geopackage(
        d / f"{name}.gpkg",
        layers,
        density_field=density_field,
        k=k,
        method=method,
        data_label=data_label,
        note=note,
        provenance=provenance,
    )
    if data_label:
        layers = {n: g.assign(data_label=data_label) for n, g in layers.items()}
        if title and data_label not in title:
            title = f"{data_label}: {title}"
        if not note or data_label not in note:
            note = f"{data_label} data" + (f" - {note}" if note else "")
    footprint = layers.get("scan_footprint")
    maps = {}
    for lname, gdf in layers.items():
        if density_field in gdf.columns:
            t = (
                f"{title} – {lname}"
                if title
                else f"{FIELD_ALIASES.get(density_field, density_field)} – {lname}"
            )
            if data_label and data_label not in t:
                t = f"{data_label}: {t}"
            maps[lname] = write_choropleth_png(
                gdf,
                d / "maps" / f"{lname}.png",
                field=density_field,
                title=t,
                note=note,
                k=k,
                method=method,
                footprint=footprint,
            )
    tables = write_tables(d / "tables", layers)
    return {
        "geopackage": gpkg,
        "layers": list(layers),
        "maps": maps,
        "tables": tables,
        "data_label": data_label,
        "provenance": dict(provenance or {}),
    }


def outputs_summary(paths: Mapping[str, Any], indent: str = "  ") -> list[str]:
    """Lines listing a run's deliverables.

    The GeoPackage and its layers, each PNG map, each table, where the figures came from.

    Args:
        paths: The dict :func:`write_run_outputs` returns, or its JSON form.
        indent: Prefix of each line.

    Returns:
        The lines, without newlines.
    """
    lines = []
    label = paths.get("data_label")
    gp = paths.get("geopackage")
    if gp:
        lab = f", labelled {label} in its metadata" if label else ""
        lines.append(f"{indent}GeoPackage (open in QGIS{lab}): {gp}")
        if paths.get("layers"):
            lines.append(f"{indent}  layers: {', '.join(paths['layers'])}")
    maps = paths.get("maps") or {}
    if maps:
        lines.append(f"{indent}maps (PNG):")
        lines.extend(f"{indent}  {k:<15}{v}" for k, v in maps.items())
    tables = paths.get("tables") or {}
    if tables:
        first = next(iter(tables.values()))
        folder = Path(first[0]).parent if first else ""
        fmts = "/".join(Path(p).suffix.lstrip(".") for p in first)
        lines.append(f"{indent}tables ({fmts}) in {folder}: {', '.join(tables)}")
    prov = paths.get("provenance") or {}
    if prov:
        lines.append(f"{indent}figures computed from:")
        lines.extend(f"{indent}  {k:<21}{v}" for k, v in prov.items())
    return lines
