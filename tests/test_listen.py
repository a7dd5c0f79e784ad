"""``ncore-prep inspect --html``: the listening page's files, read back without a browser.

(``test_listen_browser.py`` opens the same kind of page in headless Chromium.)
"""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import shutil
import sys

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from PIL import Image

from pipeline.cli import main
from pipeline.inspection import InspectError, views_figure
from pipeline.listen import (
    F0_RGB,
    SPEC_FMAX_HZ,
    SPEC_FMIN_HZ,
    ListenOptions,
    PageView,
    build_page,
    draw_thumbnail,
    png_bytes,
    render_page,
    sample_clips,
    spectrogram_rgb,
    view_params,
)
from pipeline.manifest import SAMPLE_RATE, Manifest
from pipeline.selectivity import Row, Selectivity, result_path
from pipeline.shards import ShardReader
from pipeline.testing.listen_corpus import PageCells, make_cache
from pipeline.testing.prep_corpus import GONE_ID, SHORT_ID, tree_digest

VIEWS = 2
SHARD_SIZE = 5
PAGE_ARGS = ["--per-label", "1", "--sample-seed", "4", "--workers", "1"]


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory):
    return make_cache(tmp_path_factory.mktemp("listen"), ("speaker", "emotion"), VIEWS, SHARD_SIZE)


@pytest.fixture(scope="module")
def page(manifest_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "listen"
    result = build_page(manifest_path, out, ListenOptions(workers=1))
    return out, result


def stored_rows(manifest_path):
    """{(view-set key, clip id): int16 (1 + N, T)} read straight from every shard."""
    m = Manifest.load(manifest_path)
    rows = {}
    for vs in m.view_sets:
        for shard in vs.shard_paths(manifest_path):
            reader = ShardReader(shard)
            for i, cid in enumerate(reader.clip_ids):
                rows[vs.key, cid] = reader.read_int16(i, i + 1)
    return rows


def test_every_player_holds_the_exact_stored_samples(manifest_path, page):
    out, result = page
    cells = PageCells((out / "index.html").read_text(encoding="utf-8")).cells
    rows = stored_rows(manifest_path)
    m = Manifest.load(manifest_path)
    stored_clips = {cid for _, cid in rows}
    assert len(cells) == len(rows) * (1 + VIEWS) == result.cells
    for cell in cells:
        samples, rate = sf.read(out / cell["audio"], dtype="int16")
        assert rate == SAMPLE_RATE
        expected = rows[cell["key"], cell["clip"]][int(cell["data-view"])]
        assert np.array_equal(samples, expected), cell
    # Row 0 is the same in both view sets: one file for both, the views their own.
    assert result.files == len(stored_clips) * (1 + 2 * VIEWS)
    assert len(list((out / "audio").iterdir())) == result.files
    assert len(list((out / "img").iterdir())) == result.files
    assert result.clips == len(m.clips)  # fewer clips per label than --per-label: all shown


def test_failed_clips_show_their_reason_and_the_header_its_counts(manifest_path, page):
    _, result = page
    m = Manifest.load(manifest_path)
    assert [s.header.key for s in result.view.sections] == [vs.key for vs in m.view_sets]
    for vs, section in zip(m.view_sets, result.view.sections, strict=True):
        assert {r.id for r in section.rows} == {c.id for c in m.clips}
        stored = sum(s.clips for s in vs.shards)
        assert stored == len(m.clips) - 2
        assert section.header.clip_counts == f"{len(m.clips)} in = {stored} stored + 2 failed"
        reasons = dict(section.header.failures)
        assert section.header.failed == 2 and set(reasons) == {SHORT_ID, GONE_ID}
        assert "clip too short for WORLD" in reasons[SHORT_ID]
        assert f"missing file: {GONE_ID.removeprefix('wav__')}.wav" in reasons[GONE_ID]
        notes = {r.id: r.note for r in section.rows if r.note is not None}
        assert notes == {cid: f"failed: {reason}" for cid, reason in reasons.items()}
        assert all(not r.sources for r in section.rows if r.id in notes)


def test_the_page_shows_its_view_model(page):
    """The template renders every row and cell of the view model, in order, with its files."""
    out, result = page
    parsed = PageCells((out / "index.html").read_text(encoding="utf-8"))
    rows = [(s.header.key, r.id) for s in result.view.sections for r in s.rows]
    assert [(r["key"], r["data-clip"]) for r in parsed.rows] == rows
    cells = [
        (s.header.key, r.id, str(a.view), a.audio, a.image, str(a.samples))
        for s in result.view.sections
        for r in s.rows
        for a in r.sources
    ]
    shown = [
        (c["key"], c["clip"], c["data-view"], c["audio"], c["img"], c["data-samples"])
        for c in parsed.cells
    ]
    assert shown == cells and len(cells) == result.cells


def test_page_refers_to_nothing_outside_its_folder(page):
    out, _ = page
    text = (out / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert len(links) > 10
    ids = set(re.findall(r' id="([^"]+)"', text))
    for link in links:
        if link.startswith("#"):
            assert link[1:] in ids, link
        else:
            assert ":" not in link and not link.startswith("/"), link  # no URL, no absolute path
            assert (out / link).resolve().is_relative_to(out.resolve()) and (out / link).is_file()
    assert "url(" not in text and "@import" not in text and "http" not in text


def test_bytes_per_second_of_audio_as_measured_on_disk(manifest_path, page):
    _, result = page
    m = Manifest.load(manifest_path)
    shown = [float(s.header.bytes_per_second.removesuffix(" KB")) for s in result.view.sections]
    expected = []
    for vs in m.view_sets:
        folder = vs.folder_path(manifest_path)
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        seconds = (
            sum(ShardReader(p).total_samples for p in vs.shard_paths(manifest_path)) / SAMPLE_RATE
        )
        expected.append(size / seconds / 1024)
    assert shown == pytest.approx(expected, abs=0.051)


def test_same_command_same_bytes_whatever_the_worker_count(manifest_path, page, tmp_path):
    out, _ = page
    again = tmp_path / "again"
    build_page(manifest_path, again, ListenOptions(workers=2))
    assert tree_digest(again) == tree_digest(out)


def test_flac_holds_the_same_samples(manifest_path, page, tmp_path):
    out, _ = page
    flac = tmp_path / "flac"
    build_page(manifest_path, flac, ListenOptions(workers=1, audio_format="flac"))
    for wav in (out / "audio").iterdir():
        a, _ = sf.read(wav, dtype="int16")
        b, _ = sf.read(flac / "audio" / f"{wav.stem}.flac", dtype="int16")
        assert np.array_equal(a, b)


def test_sample_per_label_is_seeded_sorted_and_bounded(manifest_path):
    m = Manifest.load(manifest_path)
    samples = {seed: sample_clips(m, 2, seed) for seed in range(6)}
    for clips in samples.values():
        for label in m.labels["emotion"]:
            assert sum(1 for c in clips if c.emotion == label) == 2
        order = [(m.labels["emotion"].index(c.emotion), c.speaker, c.id) for c in clips]
        assert order == sorted(order)
    assert sample_clips(m, 2, 3) == samples[3]
    assert len({tuple(c.id for c in clips) for clips in samples.values()}) > 1


def test_only_the_shards_holding_the_chosen_clips_are_read(manifest_path, tmp_path):
    """Damage every shard but the one holding the clip: the page is still built from it."""
    root = tmp_path / "copy"
    shutil.copytree(manifest_path.parents[1], root)
    copy = root / manifest_path.relative_to(manifest_path.parents[1])
    m = Manifest.load(copy)
    clip = m.clips[0].id
    for vs in m.view_sets:
        for shard in vs.shard_paths(copy)[1:]:
            shutil.rmtree(shard / "audio")
    result = build_page(copy, tmp_path / "page", ListenOptions(clip_ids=(clip,), workers=1))
    assert result.clips == 1 and result.shards_read == len(m.view_sets)
    assert result.cells == len(m.view_sets) * (1 + VIEWS)
    with pytest.raises(InspectError, match=r"shard-00001\.zarr"):
        build_page(copy, tmp_path / "p2", ListenOptions(clip_ids=(m.clips[5].id,), workers=1))


def test_selectivity_table_is_shown_when_it_has_been_measured(manifest_path, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(manifest_path.parents[1], root)
    copy = root / manifest_path.relative_to(manifest_path.parents[1])
    m = Manifest.load(copy)
    speaker, emotion = m.view_sets
    rows = tuple(
        Row("speaker", "envelope", condition, accuracy, interval, 0.5, 22, kept)
        for condition, accuracy, interval, kept in (
            ("originals", 0.9, (0.82, 0.96), None),
            ("views", 0.3, (0.22, 0.37), 0.0),
            ("transfer", 0.6, (0.52, 0.67), 0.25),
        )
    )
    result = Selectivity(
        speaker.key, "speaker", rows, ("p_s removes the speaker cue (xyzzy)",), True, None, 11, 2, 0
    )
    result_path(speaker.folder_path(copy)).write_text(json.dumps(result.to_dict()))
    result_path(emotion.folder_path(copy)).write_text('{"schema_version": 7}')
    view = build_page(copy, tmp_path / "page", ListenOptions(workers=1)).view
    table, unreadable = (s.header.selectivity for s in view.sections)
    assert table.measured and table.note is None and len(table.rows) == 1
    (row,) = table.rows
    dash = "\u2013"
    assert (row.label, row.features, row.chance, row.retained, row.n) == (
        "speaker", "envelope", "50.0", "0.00/0.25", "22"
    )  # fmt: skip
    assert row.cells == (
        ("originals", f"90.0 [82.0{dash}96.0]"),
        ("views", f"30.0 [22.0{dash}37.0]"),
        ("transfer", f"60.0 [52.0{dash}67.0]"),
    )
    assert table.verdicts == ("p_s removes the speaker cue (xyzzy)",)
    assert table.title == "Selectivity of p_s" and "11 clips" in table.caption
    assert unreadable.measured and not unreadable.rows
    assert "schema_version 7 is not supported" in unreadable.note
    text = (tmp_path / "page" / "index.html").read_text(encoding="utf-8")
    assert text.count("xyzzy") == 1 and text.count("schema_version 7 is not supported") == 1


def test_out_folder_holding_something_else_is_refused_and_kept(manifest_path, page, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InspectError, match="not empty"):
        build_page(manifest_path, mine, ListenOptions(workers=1))
    assert (mine / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no temporary folder left
    out, _ = page
    again = tmp_path / "again"
    shutil.copytree(out, again)
    (again / "audio" / "stale.wav").write_bytes(b"x")  # not the page's: kept
    (again / "NOTES.md").write_text("my notes")
    before = {p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file()}
    result = build_page(manifest_path, again, ListenOptions(workers=1, clip_ids=(SHORT_ID,)))
    after = {p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file()}
    assert (again / "audio" / "stale.wav").read_bytes() == b"x"
    assert (again / "NOTES.md").read_text() == "my notes"
    # The earlier page's files that the new page does not use are gone, nothing else.
    assert after < before
    assert [r.id for s in result.view.sections for r in s.rows] == [SHORT_ID, SHORT_ID]


def test_only_what_the_page_wrote_is_ever_replaced_or_deleted(manifest_path, page, tmp_path):
    out, _ = page
    # A folder holding an index.html copied from a listening page is not a page folder.
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    shutil.copy(out / "index.html", thesis / "index.html")
    (thesis / "chapter1.tex").write_text("\\chapter{}")
    digest = tree_digest(thesis)
    with pytest.raises(InspectError, match="not empty"):
        build_page(manifest_path, thesis, ListenOptions(workers=1))
    assert tree_digest(thesis) == digest
    # A page folder, rebuilt again and again, keeps the user's files beside the page.
    mine = tmp_path / "page"
    build_page(manifest_path, mine, ListenOptions(workers=1, per_label=1, seed=0))
    (mine / "NOTES.md").write_text("listened on Monday")
    (mine / "audio" / "favourite.wav").write_bytes(b"RIFF")
    for seed in (1, 0):
        build_page(manifest_path, mine, ListenOptions(workers=1, per_label=1, seed=seed))
        assert (mine / "NOTES.md").read_text() == "listened on Monday"
        assert (mine / "audio" / "favourite.wav").read_bytes() == b"RIFF"
    record = json.loads((mine / ".ncore-page.json").read_text())
    files = {p.relative_to(mine).as_posix() for p in mine.rglob("*") if p.is_file()}
    assert files == {*record["files"], ".ncore-page.json", "NOTES.md", "audio/favourite.wav"}
    # A record listing a file the page never writes is not a page's record.
    record["files"].append("NOTES.md")
    (mine / ".ncore-page.json").write_text(json.dumps(record))
    with pytest.raises(InspectError, match="not empty"):
        build_page(manifest_path, mine, ListenOptions(workers=1, clip_ids=(SHORT_ID,)))
    assert (mine / "NOTES.md").exists()


EVIL = "<script>alert(\"1\" & '2')</script>"


def test_a_label_with_markup_is_escaped_wherever_the_page_shows_it(tmp_path):
    """Emotion and speaker labels are free text from the label file: one holding
    ``<script>``, quotes and ``&`` appears on the page only escaped, exactly as often as a
    plain label in its place. (Clip ids and the dataset name cannot hold these
    characters: :func:`pipeline.manifest.name_problem` refuses them at import.)"""
    from markupsafe import escape

    names = {"plain": ("zqemotionzq", "zqspeakerzq"), "evil": (EVIL, EVIL.upper() + "&amp;")}
    pages = {}
    for case, (emotion, speaker) in names.items():
        root = tmp_path / case
        path = make_cache(root, ("speaker",), 1, rename={"anger": emotion, "spk01": speaker})
        build_page(path, root / "page", ListenOptions(workers=1))
        pages[case] = (root / "page" / "index.html").read_text(encoding="utf-8")
    plain, evil = pages["plain"], pages["evil"]
    for plain_value, evil_value in zip(names["plain"], names["evil"], strict=True):
        shown = plain.count(plain_value)
        assert shown >= 5  # the filter, the group, the link and every row of the label
        assert evil.count(evil_value) == 0
        assert evil.count(str(escape(evil_value))) == shown
    assert evil.count("<script") == plain.count("<script") == 1  # the page's own script
    assert evil.count("&amp;amp;") == plain.count("zqspeakerzq")  # escaped once, not twice


def test_every_field_of_the_view_model_is_escaped_where_it_is_shown():
    """Each text field of a page (ids, reasons, drawn parameters, the selectivity table)
    holds its own string with markup, quotes and ``&``: rendered, none appears raw and each
    appears escaped."""
    import dataclasses
    import types
    import typing

    from markupsafe import escape

    import pipeline.listen as listen

    values: list[str] = []

    def text() -> str:
        values.append(f"<b x='{len(values)}'>\"&{len(values)}</b>")
        return values[-1]

    def fill(hint):
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if dataclasses.is_dataclass(hint):
            hints = typing.get_type_hints(hint, vars(listen))
            return hint(**{f.name: fill(hints[f.name]) for f in dataclasses.fields(hint)})
        if origin is tuple:
            return tuple(fill(a) for a in (args[:1] * 2 if args[-1] is Ellipsis else args))
        if origin in (typing.Union, types.UnionType):
            return fill(args[0])
        return {str: text, int: lambda: 3, bool: lambda: True}[hint]()

    page = fill(PageView)

    def measured(section):  # the same section with its selectivity table instead of a note
        table = dataclasses.replace(section.header.selectivity, note=None)
        return dataclasses.replace(
            section, header=dataclasses.replace(section.header, selectivity=table)
        )

    tables = dataclasses.replace(page, sections=tuple(measured(s) for s in page.sections))
    html = render_page(page) + render_page(tables)
    for value in values:
        assert html.count(value) == 0, value
        assert html.count(str(escape(value))) >= 1, value
    assert html.count("<b x=") == 0


def test_drawn_parameters_are_shown_as_text_whatever_their_type():
    """Parameters stored in a shard (permuted_bands, band_sources, any other key) are shown
    as they are, never interpreted: the values reach the template as strings."""
    evil = '<img src=x onerror="alert(1)">'
    drawn = {
        "permuted_bands": [evil, 1],
        "band_sources": ["</span><script>alert(2)</script>", 2],
        "formant_ratio": evil,
        "eq": {"gains_db": [evil], "frequencies_hz": [1], "qs": [1]},
        evil: evil,
    }
    params, flags = view_params(drawn)
    by_key = {p.key: p for p in params}
    assert by_key["formant_ratio"].value == evil
    assert (
        by_key["permuted_bands"].value == f"{evil}\u2190</span><script>alert(2)</script> 1\u21902"
    )
    assert by_key["eq.gains_db"].value == f"[{evil}]"  # not numbers: not read as an EQ
    assert by_key[evil].value == evil and flags == ""
    _, flags = view_params({"output_gain": evil, "silent": True})
    assert flags == "silent"


def test_cli_writes_the_page_and_refuses_mistakes_in_one_line(manifest_path, tmp_path):
    runner = CliRunner()
    out = tmp_path / "p"
    ok = runner.invoke(
        main,
        ["inspect", str(manifest_path), "--html", str(out), "--view-set", "emotion", *PAGE_ARGS],
    )
    assert ok.exit_code == 0, ok.output
    assert re.match(r"wrote .*index\.html: 1 view set\(s\), 2 clips, ", ok.output)
    assert len(PageCells((out / "index.html").read_text(encoding="utf-8")).rows) == 2
    for args, message in (
        (["--view-set", "pitch"], "no view set matches 'pitch'"),
        (["--ids", "nope"], "clip nope is not in the manifest"),
        (["--ids", GONE_ID.replace("002", "999")], "is not in the manifest"),
        (["--per-label", "0"], "--per-label must be >= 1"),
        (["--clip", SHORT_ID], "not both"),
        (["--out", "elsewhere"], "not both"),
    ):
        bad = runner.invoke(
            main, ["inspect", str(manifest_path), "--html", str(tmp_path / "x"), *args]
        )
        assert bad.exit_code == 1, args
        assert bad.output.startswith("Error: ") and message in bad.output, bad.output
        assert bad.output.count("\n") == 1
    assert not (tmp_path / "x").exists()
    # `ncore-prep listen MANIFEST DIR` is the command; `inspect --html DIR` its alias.
    same = runner.invoke(
        main,
        ["listen", str(manifest_path), str(tmp_path / "l"), "--view-set", "emotion", *PAGE_ARGS],
    )
    assert same.exit_code == 0, same.output
    assert tree_digest(tmp_path / "l") == tree_digest(out)
    bad = runner.invoke(main, ["listen", str(manifest_path), str(tmp_path / "x"), "--ids", "nope"])
    assert bad.exit_code == 1 and bad.output.count("\n") == 1
    assert bad.output.startswith("Error: clip nope is not in the manifest"), bad.output
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------ the thumbnails


def log_row(freq_hz: float, height: int) -> float:
    """Row of ``freq_hz`` on a log axis: SPEC_FMAX_HZ at row 0, SPEC_FMIN_HZ at the bottom."""
    return (height - 1) * math.log(SPEC_FMAX_HZ / freq_hz) / math.log(SPEC_FMAX_HZ / SPEC_FMIN_HZ)


@pytest.mark.parametrize("tone_hz", [200.0, 1000.0, 3000.0])
def test_spectrogram_puts_a_tone_on_its_log_frequency_row(tone_hz):
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    rgb = spectrogram_rgb(0.5 * np.sin(2 * np.pi * tone_hz * t), np.zeros(0), np.zeros(0))
    brightness = rgb.astype(float).sum(axis=2).mean(axis=1)  # per row
    assert abs(int(np.argmax(brightness)) - log_row(tone_hz, rgb.shape[0])) <= 1.0


def test_f0_track_is_drawn_on_the_first_harmonic():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    x = sum(0.3 / k * np.sin(2 * np.pi * 220.0 * k * t) for k in range(1, 6))
    f0 = np.full(201, 220.0)
    f0[:40] = 0.0  # unvoiced first 200 ms: no line there
    rgb = spectrogram_rgb(x, f0, np.arange(201) * 0.005)
    line = np.all(rgb == np.array(F0_RGB, np.uint8), axis=2)
    rows, cols = np.nonzero(line)
    assert abs(np.median(rows) - log_row(220.0, rgb.shape[0])) <= 1.0
    width = rgb.shape[1]
    assert cols.min() >= 0.2 * width - 1 and len(set(cols)) >= 0.75 * width


@pytest.mark.parametrize("f0_hz", [110.0, 440.0])
def test_thumbnail_reports_the_pitch_and_level_of_a_stored_row(f0_hz):
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    x = sum(0.2 / k * np.sin(2 * np.pi * f0_hz * k * t) for k in range(1, 6))
    samples = np.round(x * 32768).astype(np.int16)
    thumb = draw_thumbnail(samples)
    assert thumb.f0_median_hz == pytest.approx(f0_hz, rel=0.02)
    rms = np.sqrt(np.mean(np.square(samples / 32768.0)))
    assert thumb.rms_dbfs == pytest.approx(20 * np.log10(rms), abs=0.01)
    image = np.asarray(Image.open(io.BytesIO(thumb.png)).convert("RGB"))
    line_rows = np.nonzero(np.all(image == np.array(F0_RGB, np.uint8), axis=2))[0]
    assert abs(np.median(line_rows) - log_row(f0_hz, image.shape[0])) <= 1.0
    silent = draw_thumbnail(np.zeros(8000, np.int16))
    assert silent.f0_median_hz is None and silent.rms_dbfs is None


def test_png_encoder_round_trips_through_pillow():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(7, 13, 3), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(rgb))).convert("RGB"))
    assert np.array_equal(decoded, rgb)


@pytest.mark.parametrize("rows", [1, 11])
def test_per_clip_figure_has_no_overlapping_text(rows):
    """Title, column titles, row labels and tick labels never overlap (tight_layout let the
    title run into the column titles from about 11 rows on)."""
    x = 0.3 * np.sin(np.arange(2400) / 10)  # 0.15 s: harvest is the slow part
    views = [("original", x)] + [(f"emotion-c28d85481a view {i}", x) for i in range(1, rows)]
    fig = views_figure(views, title="recanvo / 200126_2142_00-13-04.06--00-13-04.324")
    fig.set_dpi(80)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [("title", fig._suptitle.get_window_extent(renderer))]
    for i, ax in enumerate(fig.axes):
        texts = [ax.title, ax.yaxis.label, *ax.get_xticklabels(), *ax.get_yticklabels()]
        boxes += [(f"ax{i}", t.get_window_extent(renderer)) for t in texts if t.get_text()]
    overlaps = [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if a != b and box_a.overlaps(box_b)
    ]
    assert overlaps == []


@pytest.mark.parametrize("point", ["listen:file", "listen:files", "listen:index"])
def test_a_killed_rebuild_leaves_a_whole_page_and_the_next_one_no_leftover(
    manifest_path, tmp_path, point
):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from pipeline.atomic import KILL_AT_ENV

    out = tmp_path / "page"
    build_page(manifest_path, out, ListenOptions(workers=1, per_label=1, seed=0))
    (out / "NOTES.md").write_text("mine")
    code = (
        "import sys\n"
        "from pipeline.listen import ListenOptions, build_page\n"
        "build_page(sys.argv[1], sys.argv[2], ListenOptions(workers=1, per_label=1, seed=1))\n"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code, str(manifest_path), str(out)],
        env={**os.environ, "PYTHONPATH": str(root), KILL_AT_ENV: point},
    )
    assert done.returncode == -9
    # The page in the folder is whole (the earlier one, or the new one): every file its
    # index refers to is there.
    text = (out / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'src="([^"]*)"', text)
    assert links and all((out / link).is_file() for link in links)
    build_page(manifest_path, out, ListenOptions(workers=1, per_label=1, seed=1))
    record = json.loads((out / ".ncore-page.json").read_text())
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert files == {*record["files"], ".ncore-page.json", "NOTES.md"}  # nothing left over
    text = (out / "index.html").read_text(encoding="utf-8")
    assert {*re.findall(r'src="([^"]*)"', text), "index.html"} == set(record["files"])


@pytest.mark.slow
def test_killing_the_page_build_leaves_no_worker_behind(manifest_path, tmp_path):
    """The thumbnail workers end with ``inspect --html`` (issue 22, section 3)."""
    import psutil

    from pipeline.testing.processes import kill_once_workers_run

    cmd = [sys.executable, "-m", "pipeline.cli", "inspect", str(manifest_path), "--html"]
    cmd += [str(tmp_path / "page"), "--workers", "2"]
    workers = kill_once_workers_run(cmd, tmp_path, 2)
    _, alive = psutil.wait_procs(workers, timeout=60)
    assert not alive, f"{len(alive)} worker(s) of the killed page build are still running"


@pytest.mark.parametrize("damage", ["truncated chunk", "garbled drawn attribute"])
def test_a_damaged_shard_marks_its_clips_and_the_rest_of_the_page_builds(
    manifest_path, tmp_path, damage
):
    """A truncated chunk (zarr's codec error) or unreadable attributes mark the clips of that
    shard as damaged on the page; every other clip is built with its exact samples."""
    import zarr

    root = tmp_path / "copy"
    shutil.copytree(manifest_path.parents[1], root)
    copy = root / manifest_path.relative_to(manifest_path.parents[1])
    m = Manifest.load(copy)
    vs = m.view_sets[0]
    shard = vs.shard_paths(copy)[1]
    hit = set(ShardReader(shard).clip_ids)
    if damage == "truncated chunk":
        chunk = shard / "audio" / "c" / "0" / "0"
        with open(chunk, "r+b") as f:
            f.truncate(chunk.stat().st_size // 2)
        words = "damaged: samples cannot be decoded in shard-00001.zarr"
    else:
        group = zarr.open_group(shard, mode="r+", zarr_format=3)
        attrs = dict(group.attrs)
        attrs["drawn"][0] = 5
        group.attrs.put(attrs)
        words = "damaged: attribute 'drawn[0]' is not a list"
    view = build_page(copy, tmp_path / "page", ListenOptions()).view
    rows_of = {(s.header.key, r.id): r for s in view.sections for r in s.rows}
    for cid in hit:
        assert rows_of[vs.key, cid].note.startswith(words), rows_of[vs.key, cid].note
        assert rows_of[vs.key, cid].sources == ()
    shown = {k for k, r in rows_of.items() if r.sources}
    rows = stored_rows(manifest_path)
    assert len(shown) == len(rows) - len(hit)  # every other stored clip is on the page
    for (key, cid), row in rows_of.items():
        for a in row.sources:
            samples, _ = sf.read(tmp_path / "page" / a.audio, dtype="int16")
            assert np.array_equal(samples, rows[key, cid][a.view])


@pytest.mark.parametrize(("limit", "words"), [(100, "cannot write there"), (20000, "")])
def test_a_full_disk_is_one_line_and_leaves_nothing(manifest_path, tmp_path, limit, words):
    """ "Disk full" is a real RLIMIT_FSIZE in a real child process: refused by the probe
    before drawing (100 bytes), or at the first audio file that does not fit (20 kB):
    one line, exit 1, no page and no temporary folder left."""
    import os
    import resource
    import subprocess
    import sys

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "page"
    args = ["inspect", str(manifest_path), "--html", str(out), "--workers", "1"]
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        preexec_fn=limited,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},  # no truncated .pyc files
        timeout=300,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {out}"), result.stderr
    assert "File too large" in lines[0] and words in lines[0]
    assert list(tmp_path.iterdir()) == []
