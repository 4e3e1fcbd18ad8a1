"""Issue 12, item 5: paths read from journals and manifests stay inside the store, a body's
content is never echoed, and a secret is redacted in every URL encoding. Tile images are the
local test server's SYNTHETIC pattern."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from urllib.parse import quote, quote_plus, urlencode

import httpx
import pytest

from deepsolar.core.errors import DownloadError, InputDataError
from deepsolar.core.http import DownloadConfig, HttpFetcher, redact, register_secret
from deepsolar.geo.tiling import TileGrid
from deepsolar.imagery.download import download_tiles
from deepsolar.imagery.manifest import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    read_journal,
    read_manifest,
    resolve_inside,
    write_manifest,
)
from deepsolar.imagery.sources import GoogleStaticSourceConfig, XYZSourceConfig
from tests.fixtures.tileserver import TileServer

LON, LAT = -77.0365, 38.8977
GRID = TileGrid(18, 256)
FAST = DownloadConfig(backoff_base_s=0.01, backoff_max_s=0.05, max_requests_per_s=None, timeout_s=5)
# A key with characters that URL encoders treat differently: , / + space : %
KEY = "AIza,Sy/te+st sec:ret%key-0123456789"


def _tiles(n_x: int = 2, n_y: int = 2):
    t0 = GRID.tile_at(LON, LAT)
    return [GRID.tile(t0.x + i, t0.y + j) for j in range(n_y) for i in range(n_x)]


def _encodings(secret: str) -> set[str]:
    forms = {secret, quote(secret, safe=""), quote_plus(secret), quote(secret)}
    forms |= {quote(secret, safe=s) for s in (",", "/,", ":/,")}
    forms |= {quote_plus(secret, safe=s) for s in (",", "/,", ":/,")}
    forms |= {urlencode({"k": secret}, safe=",")[2:], urlencode({"k": secret})[2:]}
    forms |= {re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), f) for f in forms}
    forms.add(str(httpx.URL("http://h/p", params={"key": secret})).split("key=", 1)[1])
    return forms


def test_every_encoding_of_a_secret_is_redacted() -> None:
    register_secret(KEY)
    forms = _encodings(KEY)
    assert len(forms) >= 6  # the encodings really differ
    for form in forms:
        text = f"GET https://maps.example/api?center=1,2&key={form}&zoom=21 failed"
        out = redact(text)
        assert form not in out and "key=REDACTED&zoom=21" in out, form


@pytest.mark.network
def test_key_never_in_logs_even_with_the_http_log_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_ODD_KEY", KEY)
    with TileServer(static_key=KEY) as srv:
        src = GoogleStaticSourceConfig(api_key_env="TEST_ODD_KEY", base_url=srv.static_base_url)
        # Off by default: httpx's "HTTP Request: GET <url>" lines are not logged at all.
        monkeypatch.delenv("DEEPSOLAR_HTTP_LOG", raising=False)
        download_tiles(_tiles(2, 1), src.build(), tmp_path / "a", FAST, progress=False)
        assert srv.keys_seen and set(srv.keys_seen) == {KEY}  # the real key reached the server
        assert "HTTP Request" not in caplog.text
        # Turned on, the URLs appear, redacted in whatever encoding httpx chose.
        monkeypatch.setenv("DEEPSOLAR_HTTP_LOG", "1")
        logging.getLogger("httpx").setLevel(logging.NOTSET)
        download_tiles(_tiles(2, 2), src.build(), tmp_path / "b", FAST, progress=False)
    assert "HTTP Request" in caplog.text and "key=REDACTED" in caplog.text
    for form in _encodings(KEY):
        assert form not in caplog.text, form
    for p in tmp_path.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert not any(f.encode() in data for f in _encodings(KEY)), p
    logging.getLogger("httpx").setLevel(logging.WARNING)


def test_a_file_body_is_never_echoed(tmp_path: Path) -> None:
    secret = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
    tiles = _tiles(2, 1)
    for t in tiles:
        p = tmp_path / "cache" / str(t.zoom) / str(t.x) / f"{t.y}.png"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(secret)
    template = (tmp_path / "cache").as_uri() + "/{z}/{x}/{y}.png"
    src = XYZSourceConfig(url_template=template).build()
    with pytest.raises(DownloadError) as e:
        download_tiles(tiles, src, tmp_path / "store", FAST, progress=False)
    assert "not a usable image" in str(e.value)
    texts = [str(e.value), (tmp_path / "store" / JOURNAL_NAME).read_text()]
    texts += list(read_manifest(tmp_path / "store")["error"])
    for text in texts:
        assert "PRIVATE" not in text and "b3BlbnNzaC1" not in text and "BEGIN" not in text
    # An HTTP body is not echoed either.
    with HttpFetcher(FAST.model_copy(update={"max_retries": 0})) as f:
        with pytest.raises(DownloadError) as e2:
            f.get_image((tmp_path / "cache").as_uri() + f"/18/{tiles[0].x}/{tiles[0].y}.png")
    assert "PRIVATE" not in str(e2.value)


@pytest.mark.network
def test_a_tampered_journal_or_manifest_stops_the_run(tmp_path: Path) -> None:
    tiles = _tiles(2, 2)
    out = tmp_path / "store"
    victim = tmp_path / "x" / "victim.png"
    with TileServer() as srv:
        src = XYZSourceConfig(url_template=srv.xyz_template).build()
        download_tiles(tiles, src, out, FAST, progress=False)
        journal = out / JOURNAL_NAME
        clean = journal.read_text()
        rec = json.loads(clean.splitlines()[0])
        for tampered in (
            {**rec, "path": "tiles/../../x/victim.png"},
            {**rec, "tile_id": "../../x/victim"},
            {**rec, "path": str(victim)},
            {**rec, "x": rec["x"] + 1},  # the id no longer matches the tile
        ):
            journal.write_text(clean + json.dumps(tampered) + "\n")
            with pytest.raises(InputDataError, match="journal line 5 cannot be trusted"):
                download_tiles(tiles, src, out, FAST, progress=False)
            with pytest.raises(InputDataError, match="cannot be trusted"):
                read_journal(journal)
        assert not victim.exists() and not (tmp_path / "x").exists()
    # A manifest edited by hand (or by another program) is refused wherever it is read.
    journal.write_text(clean)
    recs = list(read_journal(journal).values())
    gdf = read_manifest(out)
    assert len(gdf) == 4
    for col, value in (("path", "tiles/../../x/victim.png"), ("tile_id", "../x/victim")):
        bad = gdf.copy()
        bad.loc[1, col] = value
        bad.to_file(out / MANIFEST_NAME, layer="tiles", driver="GPKG")
        with pytest.raises(InputDataError, match="row 2 has a tile_id or path"):
            read_manifest(out)
    # segment-tiles plans its shards from the manifest: refused before any model loads.
    from deepsolar.segmentation.shards import plan_shards

    with pytest.raises(InputDataError, match="cannot be trusted"):
        plan_shards(out / MANIFEST_NAME, 16)
    write_manifest(recs, out / MANIFEST_NAME)
    assert len(plan_shards(out / MANIFEST_NAME, 16)) == 1


def test_resolve_inside(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    assert resolve_inside(tmp_path, "masks/a.png") == (tmp_path / "masks/a.png").resolve()
    (tmp_path / "link").symlink_to(tmp_path.parent)
    for rel in ("../x.png", "masks/../../x.png", "/etc/passwd", "link/x.png"):
        with pytest.raises(InputDataError, match=re.escape("points outside the tile store")):
            resolve_inside(tmp_path, rel)


def test_a_tampered_stage_journal_is_refused(tmp_path: Path) -> None:
    from deepsolar.imagery.manifest import check_journal_paths

    journal = tmp_path / "segmentation.journal.jsonl"
    good = {"tile_id": "21-320-5-7", "mask_path": "masks/21-320/5/7.png"}
    journal.write_text(json.dumps(good) + "\n" + '{"torn": \n')
    check_journal_paths(tmp_path, journal)  # fine: a torn line is the stage's own business
    for bad in (
        {**good, "mask_path": "masks/../../victim.png"},
        {**good, "tile_id": "../../victim"},
    ):
        journal.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(InputDataError, match="journal line 2 cannot be trusted"):
            check_journal_paths(tmp_path, journal)
