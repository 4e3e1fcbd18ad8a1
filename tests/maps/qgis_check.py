"""Open every layer of a GeoPackage in a real, headless QGIS and render it (run by test_qgis.py).

Run with the system Python that has Debian's python3-qgis::

    QT_QPA_PLATFORM=offscreen /usr/bin/python3 tests/maps/qgis_check.py run.gpkg [png_dir]

Prints one JSON object: for each layer, whether it is valid, its feature count, the renderer
QGIS applied (from the GeoPackage's default style), graduated class count and attribute or the
rules (label, filter, features matching, as QGIS evaluates them), the legend lines QGIS shows in
its layer tree, the labelling, the aliases of its fields, the layer's description / identifier as
GDAL reads them from gpkg_contents, and how many pixels of a 400x400 render are not background
(plus the number of distinct colours). With ``png_dir``, each layer is saved as
``qgis_{layer}.png``: a QGIS print layout of the layer, map item and legend item. Written for
QGIS 3.22+ (Debian bookworm) and newer.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsFeatureRequest,
    QgsLayerTree,
    QgsLayerTreeModel,
    QgsLayoutExporter,
    QgsLayoutItemLegend,
    QgsLayoutItemMap,
    QgsLayoutPoint,
    QgsLayoutSize,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsPrintLayout,
    QgsProject,
    QgsProviderRegistry,
    QgsUnitTypes,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize, Qt  # noqa: E402
from qgis.PyQt.QtGui import QColor, QImage  # noqa: E402


def layer_names(path: str) -> list[str]:
    md = QgsProviderRegistry.instance().providerMetadata("ogr")
    names = []
    for sub in md.querySublayers(path):
        names.append(sub.name())
    return [n for n in names if n != "layer_styles"]


def pixel_stats(img: QImage) -> tuple[int, int]:
    img = img.convertToFormat(QImage.Format_RGB32)
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes() if hasattr(img, "sizeInBytes") else img.byteCount())
    words = memoryview(bytes(ptr)).cast("I")
    white = 0xFFFFFFFF
    non_bg = 0
    colours = set()
    for v in words:
        if v != white:
            non_bg += 1
            if len(colours) < 1000:
                colours.add(v)
    return non_bg, len(colours)


def rules_of(lyr, rule, depth: int = 0) -> list[dict]:
    out = []
    for child in rule.children():
        flt = child.filterExpression() or None
        n = None
        if flt:
            req = QgsFeatureRequest().setFilterExpression(flt)
            n = sum(1 for _ in lyr.getFeatures(req))
        out.append(
            {
                "label": child.label(),
                "filter": flt,
                "symbol": child.symbol() is not None,
                "depth": depth,
                "features": n,
            }
        )
        out.extend(rules_of(lyr, child, depth + 1))
    return out


def legend_lines(lyr) -> list[str]:
    """The legend lines QGIS shows under the layer in its layer tree."""
    root = QgsLayerTree()
    node = root.addLayer(lyr)
    model = QgsLayerTreeModel(root)
    lines = [str(n.data(Qt.DisplayRole)) for n in model.layerLegendNodes(node)]
    del model, node, root
    return lines


def layout_image(lyr, ext) -> QImage:
    """The layer in a QGIS print layout: a map item and a legend item linked to it (what an
    analyst exports), rendered at 96 dpi. The layer must belong to the project."""
    layout = QgsPrintLayout(QgsProject.instance())
    layout.initializeDefaults()
    page = layout.pageCollection().page(0)
    page.setPageSize(QgsLayoutSize(330, 170, QgsUnitTypes.LayoutMillimeters))
    map_item = QgsLayoutItemMap(layout)
    map_item.attemptMove(QgsLayoutPoint(4, 4, QgsUnitTypes.LayoutMillimeters))
    map_item.attemptResize(QgsLayoutSize(160, 160, QgsUnitTypes.LayoutMillimeters))
    map_item.setLayers([lyr])
    map_item.setCrs(lyr.crs())
    map_item.setExtent(ext)
    layout.addLayoutItem(map_item)
    legend = QgsLayoutItemLegend(layout)
    legend.setLinkedMap(map_item)
    legend.setAutoUpdateModel(False)
    legend.model().rootGroup().clear()
    legend.model().rootGroup().addLayer(lyr)
    legend.setTitle("")
    legend.attemptMove(QgsLayoutPoint(168, 4, QgsUnitTypes.LayoutMillimeters))
    layout.addLayoutItem(legend)
    legend.adjustBoxSize()
    img = QgsLayoutExporter(layout).renderPageToImage(0, QSize(), 96)
    del legend, map_item, page, layout
    return img


def check(path: str, png_dir: str | None) -> dict:
    out: dict = {"qgis_version": None, "layers": {}}
    from qgis.core import Qgis

    out["qgis_version"] = Qgis.QGIS_VERSION
    for name in layer_names(path):
        lyr = QgsVectorLayer(f"{path}|layername={name}", name, "ogr")
        info: dict = {"valid": lyr.isValid()}
        if not lyr.isValid():
            out["layers"][name] = info
            del lyr
            continue
        r = lyr.renderer()
        info["features"] = lyr.featureCount()
        info["renderer"] = r.type()
        if r.type() == "graduatedSymbol":
            info["attribute"] = r.classAttribute()
            info["classes"] = len(r.ranges())
            info["class_colors"] = [rg.symbol().color().name() for rg in r.ranges()]
            info["lower"] = r.ranges()[0].lowerValue()
            info["upper"] = r.ranges()[-1].upperValue()
        elif r.type() == "singleSymbol":
            sl = r.symbol().symbolLayer(0)
            info["symbol_layer"] = sl.layerType()
            if hasattr(sl, "brushStyle"):
                info["brush_none"] = int(sl.brushStyle()) == 0  # Qt.NoBrush
            info["stroke_color"] = sl.strokeColor().name() if hasattr(sl, "strokeColor") else None
        elif r.type() == "RuleRenderer":
            info["rules"] = rules_of(lyr, r.rootRule())
        info["labels_enabled"] = bool(lyr.labelsEnabled())
        if lyr.labelsEnabled() and lyr.labeling() is not None:
            st = lyr.labeling().settings()
            info["label_expression"] = st.fieldName if st.isExpression else None
            info["label_field"] = None if st.isExpression else st.fieldName
        prov = lyr.dataProvider()
        md = lyr.metadata()
        info["qgis_abstract"] = md.abstract()
        fields = lyr.fields()
        info["aliases"] = {f.name(): lyr.attributeAlias(i) for i, f in enumerate(fields)}
        ms = QgsMapSettings()
        ms.setLayers([lyr])
        ms.setDestinationCrs(lyr.crs())
        ext = lyr.extent()
        ext.scale(1.05)
        ms.setExtent(ext)
        ms.setOutputSize(QSize(400, 400))
        ms.setBackgroundColor(QColor(255, 255, 255))
        job = QgsMapRendererSequentialJob(ms)
        job.start()
        job.waitForFinished()
        img = job.renderedImage()
        info["non_background_px"], info["distinct_colours"] = pixel_stats(img)
        info["legend"] = legend_lines(lyr)
        if png_dir:
            QgsProject.instance().addMapLayer(lyr, False)
            page = layout_image(lyr, ext)
            info["layout_non_background_px"], _ = pixel_stats(page)
            page.save(os.path.join(png_dir, f"qgis_{name}.png"), "PNG")
            QgsProject.instance().takeMapLayer(lyr)
            del page
        del job, ms, img, r, prov  # before exitQgis, or QGIS crashes at exit
        del lyr
        out["layers"][name] = info
    return out


def main() -> int:
    path = sys.argv[1]
    png_dir = sys.argv[2] if len(sys.argv) > 2 else None
    app = QgsApplication([], False)
    app.initQgis()
    try:
        result = check(path, png_dir)
    finally:
        app.exitQgis()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
