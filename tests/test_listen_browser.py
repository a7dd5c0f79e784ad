"""The listening page in a real browser: headless Chromium (Debian's package) over DevTools.

For pages built from tiny real caches (both kinds at N = 2, one kind at N = 1, one kind at
N = 9; every corpus has a clip too short for WORLD and a missing file), Chromium opens
``index.html`` from ``file://`` and the test checks that every ``<audio>`` loads and reports
its clip's duration (from the shard's offsets) within 10 ms, every image loads with a
non-zero natural size, the parameters shown for each view equal those in the shard's
attributes, the header's parameters equal the shard's, the filters hide what they should,
and a screenshot is not blank.

Without a browser the tests are skipped with the reason (``make browser`` installs
Chromium with apt-get where it can); with ``NCORE_REQUIRE_BROWSER=1`` (as ``.ci/run``
sets) a missing browser fails them instead, so CI cannot pass without running them.
"""

from __future__ import annotations

import io
import json
import os
import re

import numpy as np
import pytest
from chromium import BrowserError, Chromium, find_chromium
from PIL import Image

from pipeline.listen import ListenOptions, build_page
from pipeline.manifest import SAMPLE_RATE, Manifest
from pipeline.shards import ShardReader
from pipeline.testing.listen_corpus import make_cache

pytestmark = pytest.mark.slow

CASES = {
    "both-kinds-n2": (("speaker", "emotion"), 2),
    "speaker-only-n1": (("speaker",), 1),
    "emotion-only-n9": (("emotion",), 9),
}

COLLECT = """
(async () => {
  const audios = [...document.querySelectorAll('audio')];
  const images = [...document.images];
  const settle = (el, events, done) => done(el) ? null : new Promise(resolve =>
    events.forEach(e => el.addEventListener(e, resolve, {once: true})));
  await Promise.race([
    Promise.all([
      ...audios.map(a => settle(a, ['loadedmetadata', 'error'], a => a.readyState >= 1 || a.error)),
      ...images.map(i => settle(i, ['load', 'error'], i => i.complete)),
    ]),
    new Promise(resolve => setTimeout(resolve, 45000)),
  ]);
  const where = el => ({key: el.closest('section').dataset.key,
                        clip: el.closest('tr').dataset.clip});
  return {
    audio: audios.map(a => ({...where(a), view: +a.closest('td').dataset.view,
      duration: a.duration, ready: a.readyState, error: a.error ? a.error.code : null})),
    images: images.map(i => ({src: i.getAttribute('src'), complete: i.complete,
      width: i.naturalWidth, height: i.naturalHeight})),
    cells: [...document.querySelectorAll('td.cell')].map(td => ({...where(td),
      view: +td.dataset.view, drawn: JSON.parse(td.dataset.drawn),
      shown: Object.fromEntries([...td.querySelectorAll('span.p')].map(
        s => [s.dataset.k, s.querySelector('b').textContent]))})),
    headers: [...document.querySelectorAll('section.vs')].map(s => ({key: s.dataset.key,
      views: s.querySelector('[data-k=views]').textContent,
      seed: s.querySelector('[data-k=seed]').textContent,
      params: Object.fromEntries([...s.querySelectorAll('span.vp')].map(
        v => [v.dataset.k, v.querySelector('b').textContent]))})),
  };
})()
"""

VISIBLE_ROWS = """
(() => {
  const set = (id, v) => { const s = document.getElementById(id); s.value = v;
    s.dispatchEvent(new Event('change')); };
  set('f-label', %s); set('f-speaker', %s);
  return [...document.querySelectorAll('tr[data-clip]')].filter(tr => !tr.hidden)
    .map(tr => [tr.closest('section').dataset.key, tr.dataset.clip]);
})()
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("NCORE_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (NCORE_REQUIRE_BROWSER=1: the browser test must run here)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    executable = find_chromium()
    if executable is None:
        _unavailable(
            "no Chromium on PATH, so the listening page cannot be checked in a browser: "
            "`make browser` installs Debian's chromium (apt-get, as root), or set CHROMIUM"
        )
    try:
        chromium = Chromium(executable, width=1280, height=900)
    except (BrowserError, OSError) as e:
        pytest.fail(f"Chromium at {executable} did not start: {e}")
    yield chromium
    chromium.close()


@pytest.fixture(scope="module", params=list(CASES))
def built(request, tmp_path_factory):
    kinds, views = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    manifest = make_cache(root, kinds, views)
    out = root / "page"
    build_page(manifest, out, ListenOptions(workers=1))
    return manifest, out


def shard_truth(manifest_path):
    """{(key, clip id): (samples per row, drawn list)} and {key: shard attrs}, from the shards."""
    m = Manifest.load(manifest_path)
    clips, attrs = {}, {}
    for vs in m.view_sets:
        for path in vs.shard_paths(manifest_path):
            reader = ShardReader(path)
            attrs[vs.key] = reader.attrs
            for i, cid in enumerate(reader.clip_ids):
                samples = int(reader.offsets[i + 1] - reader.offsets[i])
                clips[vs.key, cid] = (samples, reader.drawn(i))
    return clips, attrs


def check_shown_parameters(shown: dict[str, str], drawn: dict) -> None:
    """What the cell shows equals the stored draw, to the digits it shows."""
    for key in ("formant_ratio", "pitch_ratio", "pitch_range_ratio"):
        if key in drawn:
            assert float(shown.pop(key)) == pytest.approx(drawn[key], abs=5e-4 + 1e-9), key
    if "eq" in drawn:
        gains = [float(g) for g in shown.pop("eq.gains_db").split()]
        assert gains == pytest.approx(drawn["eq"]["gains_db"], abs=0.05 + 1e-9)
    if "permuted_bands" in drawn:
        pairs = re.findall(r"(\d+)\u2190(\d+)", shown.pop("permuted_bands"))
        assert [int(t) for t, _ in pairs] == drawn["permuted_bands"]
        assert [int(s) for _, s in pairs] == drawn["band_sources"]
        assert len(drawn["permuted_bands"]) > 0
    assert shown == {}, f"shown but not checked: {shown}"


def test_page_loads_and_shows_what_the_shards_hold(browser, built):
    manifest_path, out = built
    m = Manifest.load(manifest_path)
    truth, attrs = shard_truth(manifest_path)
    browser.open((out / "index.html").as_uri())
    page = browser.evaluate(COLLECT)

    # Every player: loaded, the clip's duration within 10 ms; one per stored row.
    expected_players = sum(1 + vs.views for vs in m.view_sets for (k, _) in truth if k == vs.key)
    assert len(page["audio"]) == expected_players > 0
    for a in page["audio"]:
        assert a["error"] is None and a["ready"] >= 1, a
        samples, _ = truth[a["key"], a["clip"]]
        assert abs(a["duration"] - samples / SAMPLE_RATE) <= 0.010, a

    # Every image: loaded with its natural size.
    assert len(page["images"]) == expected_players
    for img in page["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img

    # Every view's parameters, as shown and as embedded, equal the shard's attributes.
    views = [c for c in page["cells"] if c["view"] > 0]
    assert len(views) == sum(vs.views for vs in m.view_sets for (k, _) in truth if k == vs.key)
    for cell in page["cells"]:
        _, drawn = truth[cell["key"], cell["clip"]]
        if cell["view"] == 0:
            assert cell["shown"] == {} and cell["drawn"] == {}
            continue
        stored = drawn[cell["view"] - 1]
        assert cell["drawn"] == stored
        check_shown_parameters(dict(cell["shown"]), stored)

    # The header of each view set: N, seed and parameters as stored in its shards.
    assert [h["key"] for h in page["headers"]] == [vs.key for vs in m.view_sets]
    for header in page["headers"]:
        stored = attrs[header["key"]]
        assert int(header["views"]) == stored["views"] and int(header["seed"]) == stored["seed"]
        assert {k: json.loads(v) for k, v in header["params"].items()} == stored["params"]

    # The filters: a label, then a label and a speaker, show exactly those clips.
    label, speaker = m.labels["emotion"][1], m.labels["speaker"][0]
    for chosen_speaker in ("", speaker):
        visible = browser.evaluate(VISIBLE_ROWS % (json.dumps(label), json.dumps(chosen_speaker)))
        expected = [
            c.id for c in m.clips if c.emotion == label and chosen_speaker in ("", c.speaker)
        ]
        for vs in m.view_sets:
            assert sorted(cid for key, cid in visible if key == vs.key) == sorted(expected)
    browser.evaluate(VISIBLE_ROWS % ('""', '""'))

    # A screenshot that is not blank: many colours, and far from one flat tone.
    png = browser.screenshot(full_page=True)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert pixels.shape[0] >= 900 and pixels.shape[1] >= 1280
    assert pixels.std() > 20
    packed = pixels[..., 0].astype(np.uint32) << 16 | pixels[..., 1].astype(np.uint32) << 8
    assert len(np.unique(packed | pixels[..., 2])) > 1000
