"""The view-set contract (pipeline/viewset.py): keys, the F0 range, shard attributes.

The keys pinned here were computed by the code before the F0 range became an option
(``pipeline/prep.py`` at commit d4624f8): a view set made with WORLD's default range must
keep its key, folder and shard bytes.
"""

from __future__ import annotations

import pytest

from pipeline.manifest import ManifestError, ViewSet
from pipeline.viewset import ShardAttributes, view_set_key

OLD = dict(
    dataset="d",
    kind="speaker",
    views=5,
    seed=1,
    params={"a": 1.5},
    f0_method="harvest",
    shard_size=64,
    clip_ids=["x", "y"],
    sample_rate=16000,
    code_version="1",
)


def test_default_f0_range_keeps_the_keys_of_existing_view_sets():
    assert view_set_key(**OLD) == "a92b23cb24"
    assert view_set_key(**OLD, f0_floor_hz=71.0, f0_ceil_hz=800.0) == "a92b23cb24"
    other = dict(OLD, kind="emotion", views=3, seed=7, params={"num_bands": 40})
    other.update(f0_method="dio", shard_size=8, clip_ids=["a"])
    assert view_set_key(**other) == "fab120b5a3"


def test_f0_range_is_part_of_the_key():
    keys = {
        view_set_key(**OLD),
        view_set_key(**OLD, f0_ceil_hz=2000.0),
        view_set_key(**OLD, f0_ceil_hz=1999.0),
        view_set_key(**OLD, f0_floor_hz=60.0),
        view_set_key(**OLD, f0_floor_hz=60.0, f0_ceil_hz=2000.0),
    }
    assert len(keys) == 5


def _view_set(**changes) -> ViewSet:
    base = dict(
        kind="speaker", views=2, seed=5, params={"formant_ratio_max": 1.4}, key="abc",
        folder="../cache/demo/speaker-n2-abc", num_shards=3, shard_size=4, code_version="1",
    )  # fmt: skip
    return ViewSet(**{**base, **changes})


def test_shard_attributes_of_the_default_range_are_those_written_before():
    # The attribute dict (and its order) that pipeline/prep.py wrote at commit d4624f8.
    old = {
        "kind": "speaker", "views": 2, "seed": 5, "key": "abc",
        "params": {"formant_ratio_max": 1.4}, "f0_method": "harvest", "code_version": "1",
        "dataset": "demo", "shard_index": 2,
    }  # fmt: skip
    attrs = ShardAttributes.for_shard(_view_set(), "demo", 2).to_dict()
    assert list(attrs.items()) == list(old.items())
    wide = ShardAttributes.for_shard(_view_set(f0_ceil_hz=2000.0), "demo", 2).to_dict()
    assert wide == {**old, "f0_floor_hz": 71.0, "f0_ceil_hz": 2000.0}


def test_shard_attribute_mismatches_are_named():
    vs = _view_set(f0_ceil_hz=2000.0)
    expected = ShardAttributes.for_shard(vs, "demo", 1)
    assert ShardAttributes.from_dict(expected.to_dict()).mismatches(expected) == []
    # A shard written with the default range where the view set records 2 kHz.
    default_range = ShardAttributes.for_shard(_view_set(), "demo", 1).to_dict()
    found = ShardAttributes.from_dict(default_range).mismatches(expected)
    assert any(m.startswith("attribute f0_ceil_hz=None") for m in found)
    moved = ShardAttributes.from_dict({**expected.to_dict(), "shard_index": 0})
    assert moved.mismatches(expected) == ["attribute shard_index=0 but the view set says 1"]
    # A shard from write_view_set records only the five required fields: nothing to compare.
    external = ShardAttributes(vs.kind, vs.views, vs.seed, vs.key, dict(vs.params))
    assert ShardAttributes.from_dict(external.to_dict()).mismatches(expected) == []
    assert ShardAttributes.from_dict({}).mismatches(expected)[0].startswith("attribute kind=None")


def test_manifest_records_the_f0_range_and_refuses_view_sets_without_one():
    vs = _view_set(f0_floor_hz=60.0, f0_ceil_hz=2000.0)
    data = vs.to_dict()
    assert (data["f0_floor_hz"], data["f0_ceil_hz"]) == (60.0, 2000.0)
    assert ViewSet.from_dict(data) == vs
    old = {k: v for k, v in data.items() if k not in ("f0_floor_hz", "f0_ceil_hz")}
    with pytest.raises(ManifestError, match=r"no F0 range .* `ncore-prep migrate MANIFEST`"):
        ViewSet.from_dict(old)  # the first week's layout (tests/test_manifest_schema.py)
    with pytest.raises(ManifestError, match="missing field 'f0_ceil_hz'"):
        ViewSet.from_dict({**old, "f0_floor_hz": 71.0})
    with pytest.raises(ManifestError, match=r"f0_floor_hz 900\.0 must be below f0_ceil_hz"):
        ViewSet.from_dict({**data, "f0_floor_hz": 900.0, "f0_ceil_hz": 800.0})
    with pytest.raises(ManifestError, match="'f0_ceil_hz' must be a frequency"):
        ViewSet.from_dict({**data, "f0_ceil_hz": "high"})


# ----- a reader uses a shard only if it belongs to this manifest's view set ------------------
# Two versions of one corpus under one dataset name: the same clip ids and lengths, one
# clip's samples changed (negated). Real WAV files, real manifests, real perturbation.

import shutil  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

from click.testing import CliRunner  # noqa: E402

from pipeline.audio import load_audio, write_wav  # noqa: E402
from pipeline.cli import main as prep_main  # noqa: E402
from pipeline.manifest import Manifest  # noqa: E402
from pipeline.shards import ShardForeign, open_view_set  # noqa: E402
from pipeline.testing.processes import one_line_error  # noqa: E402
from pipeline.testing.toy import TOY_TRAIN_OPTIONS  # noqa: E402
from pipeline.viewset import cache_folder_problem  # noqa: E402
from trainer.cli import main as train_main  # noqa: E402

NAME = "twin"


def _two_versions(root: Path) -> tuple[Path, Path]:
    """Corpus A and corpus B (A with one clip negated: same ids, same lengths)."""
    from pipeline.datasets import build_manifest
    from pipeline.datasets.synthetic import SyntheticConfig, generate

    config = SyntheticConfig(
        speakers=2, emotions=2, clips=8, min_duration=0.25, max_duration=0.35, seed=5
    )
    generate(root / "a", config)
    shutil.copytree(root / "a", root / "b")
    wav = sorted((root / "b").rglob("*.wav"))[0]
    audio, _, _ = load_audio(wav)
    write_wav(wav, -audio)
    paths = []
    for tag in ("a", "b"):
        path = root / "manifests" / tag / f"{NAME}.json"
        manifest, _ = build_manifest("csv", root / tag, NAME, seed=1, manifest_path=path)
        manifest.save(path)
        paths.append(path)
    return paths[0], paths[1]


def _perturb(paths, root: Path, kinds=("speaker",)) -> None:
    from pipeline.prep import PerturbSettings, fixed_executor, run_perturb

    settings = PerturbSettings(kinds=kinds, views=1, f0_method="dio", shard_size=4)
    with ThreadPoolExecutor(2) as pool:
        for path in paths:
            run_perturb(path, settings, fixed_executor(pool), root / "cache", progress=False)


def _without_checksums(path: Path) -> None:
    """The manifest as written before source checksums were recorded (legacy keys)."""
    m = Manifest.load(path)
    replace(m, clips=tuple(replace(c, source_sha256="") for c in m.clips)).save(path)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("twins")
    a, b = _two_versions(root)
    ma, mb = Manifest.load(a), Manifest.load(b)
    assert [c.id for c in ma.clips] == [c.id for c in mb.clips]
    assert [c.num_samples for c in ma.clips] == [c.num_samples for c in mb.clips]
    assert [c.source_sha256 for c in ma.clips] != [c.source_sha256 for c in mb.clips]
    return root, a, b


def test_two_corpora_under_one_name_get_two_view_sets(twins, tmp_path) -> None:
    root, a, b = twins
    for src in (a, b):
        (tmp_path / src.parent.name).mkdir()
        shutil.copy(src, tmp_path / src.parent.name / src.name)
    a, b = (tmp_path / p.parent.name / p.name for p in (a, b))
    for p in (a, b):  # data_dir is stored relative to the manifest: point back at the corpus
        m = Manifest.load(p)
        m = replace(m, data_dir=str(root / p.parent.name))
        m.save(p)
    _perturb([a, b], tmp_path)
    va, vb = (Manifest.load(p).view_sets[0] for p in (a, b))
    assert va.key != vb.key and va.folder_path(a) != vb.folder_path(b)
    for p in (a, b):  # each reads its own shards, unchanged by the other's perturbation
        m = Manifest.load(p)
        _, readers = open_view_set(m, p, "speaker")
        assert [r.attrs["checksum"] for r in readers] == [s.checksum for s in m.view_sets[0].shards]


def _shared_folder(twins, tmp_path) -> tuple[Path, Path]:
    """A and B keyed as before checksums (one key, one folder), A perturbed first, then B:
    the folder holds B's shards, A's manifest lists A's checksums."""
    root, a0, b0 = twins
    paths = []
    for src in (a0, b0):
        dst = tmp_path / src.parent.name / src.name
        dst.parent.mkdir(parents=True)
        m = Manifest.load(src)
        replace(m, data_dir=str(root / src.parent.name)).save(dst)
        _without_checksums(dst)
        paths.append(dst)
    _perturb(paths, tmp_path)
    va, vb = (Manifest.load(p).view_sets[0] for p in paths)
    assert va.key == vb.key and va.folder_path(paths[0]) == vb.folder_path(paths[1])
    assert [s.checksum for s in va.shards] != [s.checksum for s in vb.shards]
    return paths[0], paths[1]


def test_every_reader_refuses_a_shard_another_manifest_wrote(twins, tmp_path) -> None:
    from trainer.data import make_eval_loader, make_train_loader, view_loader

    a, b = _shared_folder(twins, tmp_path)
    m = Manifest.load(a)
    with pytest.raises(ShardForeign, match="checksum"):
        open_view_set(m, a, "speaker")
    for build in (
        lambda: make_train_loader(m, a, task="emotion", kind="speaker"),
        lambda: make_eval_loader(m, a, "test", task="emotion", kind="speaker"),
        lambda: view_loader(m, a, "speaker", 1),
    ):
        with pytest.raises(ShardForeign, match="does not belong to this manifest"):
            build()
    clip = m.clips[0].id
    runner = CliRunner()
    for args in (
        ["inspect", str(a), "--clip", clip, "--out", str(tmp_path / "clip")],
        ["inspect", str(a), "--html", str(tmp_path / "page"), "--workers", "1"],
        ["selectivity", str(a), "--jobs", "1"],
    ):
        line = one_line_error(runner.invoke(prep_main, args))
        assert "does not belong to this manifest" in line, (args, line)
    assert not (tmp_path / "page").exists()
    # ncore-train itself: one line that names the way out (a corpus of its own, --name).
    # Before the fix training on A read B's audio and exited 0 (issue 13).
    train = ["--manifest", str(a), *TOY_TRAIN_OPTIONS, "--views", "1", "--out", str(tmp_path / "r")]
    line = one_line_error(runner.invoke(train_main, train))
    assert "does not belong to this manifest" in line and "--name" in line
    # B, whose shards these are, reads them.
    mb = Manifest.load(b)
    assert len(open_view_set(mb, b, "speaker")[1]) == len(mb.view_sets[0].shards)


def test_every_reader_refuses_a_shard_copied_from_another_view_set(twins, tmp_path) -> None:
    from trainer.data import make_train_loader

    root, a0, _ = twins
    a = tmp_path / "a" / a0.name
    a.parent.mkdir()
    replace(Manifest.load(a0), data_dir=str(root / "a")).save(a)
    _perturb([a], tmp_path, kinds=("speaker", "emotion"))
    m = Manifest.load(a)
    speaker, emotion = (m.view_set(k) for k in ("speaker", "emotion"))
    target = emotion.folder_path(a) / emotion.shards[0].path
    shutil.rmtree(target)
    shutil.copytree(speaker.folder_path(a) / speaker.shards[0].path, target)
    with pytest.raises(ShardForeign, match="kind"):
        open_view_set(m, a, "emotion")
    with pytest.raises(ShardForeign, match="attribute kind"):
        make_train_loader(m, a, task="speaker", kind="emotion")
    line = one_line_error(
        CliRunner().invoke(
            prep_main, ["inspect", str(a), "--clip", m.clips[0].id, "--out", str(tmp_path / "c")]
        )
    )
    assert "attribute kind" in line
    args = ["selectivity", str(a), "--view-set", emotion.key, "--jobs", "1"]
    assert "attribute kind" in one_line_error(CliRunner().invoke(prep_main, args))


def test_perturb_writes_only_into_the_folder_it_computes(twins, tmp_path) -> None:
    from pipeline.prep import PerturbSettings, PrepError, fixed_executor, run_perturb

    root, a0, _ = twins
    a = tmp_path / "manifests" / a0.name
    a.parent.mkdir()
    replace(Manifest.load(a0), data_dir=str(root / "a")).save(a)
    cache = tmp_path / "cache"
    _perturb([a], tmp_path)
    m = Manifest.load(a)
    vs = m.view_sets[0]
    name = vs.folder_path(a).name
    settings = PerturbSettings(kinds=("speaker",), views=1, f0_method="dio", shard_size=4)

    def perturb() -> None:
        with ThreadPoolExecutor(1) as pool:
            run_perturb(a, settings, fixed_executor(pool), cache, progress=False)

    # A folder that merely ends with the view set's name, elsewhere.
    elsewhere = tmp_path / "elsewhere" / name
    (elsewhere / "shard-00000.zarr").mkdir(parents=True)
    (elsewhere / "shard-00000.zarr" / "thesis.txt").write_text("mine")
    text = a.read_text().replace(vs.folder, "../elsewhere/" + name)
    with pytest.raises(ManifestError, match="not in the cache folder of dataset"):
        Manifest.from_bytes(text.encode(), a)
    # ... and one that even has the dataset's name in it, under another root.
    sneaky = tmp_path / "elsewhere" / NAME / name
    shutil.copytree(elsewhere, sneaky)
    bad = replace(m, view_sets=(replace(vs, folder=f"../elsewhere/{NAME}/{name}", shards=()),))
    bad.save(a)
    assert cache_folder_problem(bad, a, bad.view_sets[0], cache) is not None
    with pytest.raises(PrepError, match="is not"):
        perturb()
    assert (sneaky / "shard-00000.zarr" / "thesis.txt").read_text() == "mine"
    assert sorted(p.name for p in sneaky.iterdir()) == ["shard-00000.zarr"]
    # A symlink put in place of the view set's own folder is not followed out of the cache.
    m.save(a)
    shutil.rmtree(vs.folder_path(a))
    (cache / NAME / name).symlink_to(sneaky, target_is_directory=True)
    with pytest.raises(PrepError, match="symlinks resolved"):
        perturb()
    assert (sneaky / "shard-00000.zarr" / "thesis.txt").read_text() == "mine"


# ----- the one reader (pipeline/reader.py) ------------------------------------------------
import json  # noqa: E402

import numpy as np  # noqa: E402

from pipeline.reader import LocatedManifest, choose_view_set, clip_places, read_clips  # noqa: E402
from pipeline.shards import ShardDamaged, ShardReader  # noqa: E402
from pipeline.testing.toy import write_trainer_corpus  # noqa: E402


def test_the_reader_places_reads_and_marks_or_refuses_a_damaged_clip(tmp_path) -> None:
    path = write_trainer_corpus(tmp_path, n_clips=14, views=1, shard_size=6, seconds=0.1)
    source = LocatedManifest.load(path)
    vs = choose_view_set(source, "speaker")
    ids = [c.id for c in source.manifest.clips]
    assert clip_places(source.manifest, vs) == {cid: divmod(k, 6) for k, cid in enumerate(ids)}
    # The view set a manifest means: by key, by kind, the other kind only for view 0.
    assert choose_view_set(source, key=vs.key) is vs
    with pytest.raises(ManifestError, match="'nope' is not in the manifest"):
        choose_view_set(source, key="nope")
    with pytest.raises(ManifestError, match="no emotion view set"):
        choose_view_set(source, "emotion")
    assert choose_view_set(source, "emotion", any_kind=True) is vs
    # Rows as stored: compared with a plain read of each shard.
    stored = read_clips(source, vs, ids)
    for entry in vs.shards:
        reader = ShardReader(source.folder(vs) / entry.path)
        for i, cid in enumerate(reader.clip_ids):
            a, b = reader.offsets[i], reader.offsets[i + 1]
            assert np.array_equal(stored[cid].rows, reader.read_int16(0, len(reader))[:, a:b])
            assert stored[cid].shard == entry.index
    # Damage one clip's CRC-32 in the shard's attributes: refused, or marked alone.
    meta = source.folder(vs) / "shard-00001.zarr" / "zarr.json"
    record = json.loads(meta.read_text())
    record["attributes"]["clip_crc32"][2] ^= 1
    meta.write_text(json.dumps(record))
    with pytest.raises(ShardDamaged, match=f"clip '{ids[8]}' does not match the CRC-32"):
        read_clips(source, vs, ids)
    marked = read_clips(source, vs, ids, mark=True)
    assert [cid for cid in ids if marked[cid].status != "ok"] == [ids[8]]
    assert marked[ids[8]].status == "damaged" and marked[ids[8]].rows is None
    assert np.array_equal(marked[ids[9]].rows, stored[ids[9]].rows)
