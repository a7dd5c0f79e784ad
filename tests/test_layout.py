"""The package layout: no import cycle, the pure modules stay free of torch, the run folder's
file names are spelt in one module, and test helpers come from the package."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "trainer")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Project module -> project modules it imports (anywhere in its body, lazy imports
    included: a cycle through a function-level import is still a cycle)."""
    paths = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    modules = {module_name(p): p for p in paths}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # ``from package import submodule`` depends on the submodule; ``from module
                # import name`` on the module.
                names = [
                    f"{node.module}.{a.name}"
                    if f"{node.module}.{a.name}" in modules
                    else node.module
                    for a in node.names
                ]
            else:
                continue
            targets |= {n for n in names if n in modules and n != name}
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_between_project_modules() -> None:
    graph = import_graph()
    assert "trainer.loop" in graph and "trainer.evaluate" in graph
    assert find_cycle(graph) is None


def test_the_loop_does_not_evaluate() -> None:
    graph = import_graph()
    assert not graph["trainer.loop"] & {
        "trainer.evaluate",
        "trainer.summary",
        "trainer.probes",
        "trainer.plots",
        "trainer.report",
    }


def test_statistics_reports_and_run_records_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import trainer.summary, trainer.report, trainer.rundir, trainer.probes\n"
        "import pipeline.stats.metrics, pipeline.stats.probe, pipeline.stats.crossfit\n"
        "import pipeline.stats.bootstrap, pipeline.stats.protocol, pipeline.selectivity\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_run_folder_file_names_are_spelt_only_in_rundir() -> None:
    names = (
        "metrics.jsonl",
        "test_metrics.json",
        "evaluation.json",
        "training.json",
        "model.json",
        "config.json",
        "summary.json",
        "test_embeddings.npz",
        "heads.safetensors",
    )
    pattern = re.compile("|".join(re.escape(f'"{n}"') for n in names) + r'|f"seed-\{')
    spelt = []
    for folder in ("pipeline", "trainer", "bench", "studies"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.name == "rundir.py":
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    spelt.append(f"{path.relative_to(ROOT)}:{number}")
    assert spelt == []


def test_tests_bench_and_studies_import_helpers_from_the_package_without_path_edits() -> None:
    edit = re.compile(r"sys\.path\.(insert|append)\(")
    edits = [
        str(path.relative_to(ROOT))
        for folder in ("tests", "bench", "studies")
        for path in (ROOT / folder).rglob("*.py")
        if path != Path(__file__).resolve() and edit.search(path.read_text(encoding="utf-8"))
    ]
    assert edits == []


# ----- run-folder files are written only through trainer/rundir.py (issue 20) ---------------
# What writes a file, and the RunDir / SeedDir paths and rundir constants of the folder's
# records: a write call whose target mentions one of them, outside rundir.py (and the
# atomic-write helpers themselves), writes a run-folder record around its typed writer.
WRITERS = {"write_json", "write_text", "write_bytes", "write_npz", "dump", "savez", "open"}
RUN_PATHS = {
    "config_path", "summary_json", "summary_md", "evaluation", "embeddings", "record_path",
    "model_record_path", "split_path", "metrics", "probe_files", "legacy_test_metrics",
    "CONFIG_FILE", "SUMMARY_JSON", "SUMMARY_MD", "EVALUATION_FILE", "EMBEDDINGS_FILE",
    "SEED_RECORD_FILE", "MODEL_RECORD_FILE", "SPLIT_FILE", "METRICS_FILE",
    "CHECKPOINT_STATE_FILE", "LEGACY_TEST_METRICS_FILE",
}  # fmt: skip
RUN_FILE_NAMES = re.compile(
    r"^/?(config|summary|evaluation|training|model|split|state|test_metrics)\.json$"
    r"|^/?(summary\.md|metrics\.jsonl|test_embeddings\.npz)$"
)


def run_folder_writes(source: str) -> list[int]:
    """Line numbers of the calls in ``source`` that write a run-folder record: a writer
    (``write_json(run.summary_json, ...)``, ``json.dump(data, open(seed.evaluation))``,
    ``seed.metrics.write_text(...)``) whose target names a run path or a record's file."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if name not in WRITERS:
            continue
        # The target: the path argument (json.dump: the file), or the path a method is
        # called on (``path.write_text(...)``); not the data written.
        position = 1 if name == "dump" else 0
        targets = node.args[position : position + 1] + [
            k.value for k in node.keywords if k.arg in ("path", "file", "fp")
        ]
        if isinstance(func, ast.Attribute):
            targets.append(func.value)
        for part in (sub for target in targets for sub in ast.walk(target)):
            mentioned = (
                (isinstance(part, ast.Attribute) and part.attr in RUN_PATHS)
                or (isinstance(part, ast.Name) and part.id in RUN_PATHS)
                or (
                    isinstance(part, ast.Constant)
                    and isinstance(part.value, str)
                    and RUN_FILE_NAMES.search(part.value)
                )
            )
            if mentioned:
                found.append(node.lineno)
                break
    return sorted(set(found))


def test_the_write_finder_finds_planted_run_folder_writes() -> None:
    planted = (
        "write_json(run.summary_json, summary)\n"
        "json.dump(record, open(seed.evaluation, 'w'))\n"
        "seed.metrics.write_text('')\n"
        "write_text(run.path / 'summary.md', text)\n"
        "write_text(out, table)\n"  # a user's --out file: not the run folder's
        "x = run.summary_json.read_text()\n"  # a read
    )
    assert run_folder_writes(planted) == [1, 2, 3, 4]


def test_run_folder_records_are_written_only_through_rundir() -> None:
    allowed = {ROOT / "trainer" / "rundir.py", ROOT / "pipeline" / "atomic.py"}
    writes = [
        f"{path.relative_to(ROOT)}:{line}"
        for folder in ("pipeline", "trainer", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path not in allowed
        for line in run_folder_writes(path.read_text(encoding="utf-8"))
    ]
    assert writes == []


# The probe estimator, the folds, the balanced-accuracy scorer and the bootstrap's draw: the
# spellings that a copy of the statistics layer (pipeline/stats/) would need.
STATISTICS = re.compile(
    r"\b(LogisticRegression|StandardScaler|SimpleImputer|StratifiedKFold|make_pipeline"
    r"|balanced_accuracy_score|sklearn\.(linear_model|model_selection|preprocessing|impute))\b"
    r"|\.integers\(\s*0\s*,\s*len\(|def \w*bootstrap\w*\("
)


def lines_matching(files: dict[str, str], pattern: re.Pattern[str]) -> list[str]:
    """``path:line`` of every line of ``files`` (path -> source text) ``pattern`` finds."""
    return [
        f"{path}:{number}"
        for path, text in files.items()
        for number, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]


def statistics_copies(files: dict[str, str]) -> list[str]:
    """``path:line`` of every statistics spelling in ``files``."""
    return lines_matching(files, STATISTICS)


def test_the_copy_finder_finds_a_planted_probe_and_bootstrap() -> None:
    planted = {
        "a.py": "from sklearn.linear_model import LogisticRegression\n",
        "b.py": "x = 1\nidx = rng.integers(0, len(y), len(y))\n",
        "c.py": "def my_bootstrap(y):\n",
        "d.py": "from sklearn.manifold import TSNE\nstart = rng.integers(0, n - crop)\n",
    }
    assert statistics_copies(planted) == ["a.py:1", "b.py:2", "c.py:1"]


def test_probe_and_bootstrap_code_lives_only_in_the_statistics_layer() -> None:
    files = {
        str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
        for folder in ("pipeline", "trainer", "bench", "studies")
        for path in (ROOT / folder).rglob("*.py")
        if (ROOT / "pipeline" / "stats") not in path.parents
    }
    assert statistics_copies(files) == []
    # The layer itself holds them, and imports nothing above it.
    inside = {
        str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
        for path in (ROOT / "pipeline" / "stats").rglob("*.py")
    }
    assert statistics_copies(inside)
    graph = import_graph()
    for name in (n for n in graph if n.startswith("pipeline.stats")):
        assert all(t.startswith("pipeline.stats") for t in graph[name]), (name, graph[name])


MEMBERSHIP = re.compile(
    r"(//|%)\s*(\w+\.)*shard_size\b|range\((?:[^()]|\([^()]*\))*,\s*(\w+\.)*shard_size\)"
)


def zarr_and_membership_uses(sources: dict[str, str]) -> list[str]:
    """``module: what`` for every zarr import and every piece of shard-membership arithmetic
    (``// shard_size``, ``% shard_size``, ``range(.., shard_size)``) in ``sources``."""
    found = []
    for name, text in sources.items():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            if any(n == "zarr" or n.startswith("zarr.") for n in names):
                found.append(f"{name}: imports zarr")
        found += [f"{name}: {m.group(0)}" for m in MEMBERSHIP.finditer(text)]
    return found


def test_the_membership_finder_finds_planted_zarr_and_arithmetic() -> None:
    planted = {
        "a": "import zarr.codecs\n",
        "b": "def f(i, vs):\n    return i // vs.shard_size, i % shard_size\n",
        "c": "for start in range(0, n, shard_size):\n    pass\n",
        "d": "x = total // slots\n",
    }
    found = zarr_and_membership_uses(planted)
    assert [f.split(":")[0] for f in found] == ["a", "b", "b", "c"]


def test_zarr_and_shard_membership_live_only_in_their_modules() -> None:
    """zarr is imported by pipeline/shards.py alone (the shard format; pipeline/testing/, the
    tests' helpers that damage shards on purpose, may too); which shard holds a clip is
    computed by pipeline/viewset.py's shard_members alone (read through pipeline/reader.py);
    shards.write_view_set cuts the clips it is handed the same way."""
    allowed = {"pipeline.shards": {"imports zarr", "range(0, len(clips), shard_size)"}}
    allowed["pipeline.viewset"] = {"range(0, len(ids), shard_size)"}
    paths = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    sources = {
        module_name(p): p.read_text(encoding="utf-8")
        for p in paths
        if not module_name(p).startswith("pipeline.testing")
    }
    uses = zarr_and_membership_uses(sources)
    assert any(u.startswith("pipeline.viewset:") for u in uses)  # the finder sees the real one
    stray = [u for u in uses if u.split(": ", 1)[1] not in allowed.get(u.split(":")[0], set())]
    assert stray == []


# ----- one error root --------------------------------------------------------------------
def pipeline_error_names() -> set[str]:
    """Every exception class defined in pipeline/ (NCoreError, PipelineError, ManifestError,
    ShardError, LockHeld, ...): the names a trainer handler would catch a pipeline error by."""
    names = {"NCoreError"}
    for path in (ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and (b.id in names or b.id.endswith("Error"))
                for b in node.bases
            ):
                names.add(node.name)
    return names


def retyped_errors(source: str, caught: set[str]) -> list[int]:
    """Lines of ``except <one of caught> as e`` handlers that raise ``TrainerError`` carrying
    ``e``'s text (``str(e)``, or an f-string holding ``{e}``): a pipeline error re-raised as
    a trainer error. (A handler that writes a new message from the error's fields, or
    re-raises the pipeline error with its context added, is not one.)"""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ExceptHandler) or node.type is None or not node.name:
            continue
        types = node.type.elts if isinstance(node.type, ast.Tuple) else [node.type]
        if not any(isinstance(t, ast.Name) and t.id in caught for t in types):
            continue
        for raised in (n for statement in node.body for n in ast.walk(statement)):
            if not (
                isinstance(raised, ast.Raise)
                and isinstance(raised.exc, ast.Call)
                and isinstance(raised.exc.func, ast.Name)
                and raised.exc.func.id == "TrainerError"
            ):
                continue
            if any(_carries(arg, node.name) for arg in raised.exc.args):
                found.append(node.lineno)
    return found


def _carries(arg: ast.expr, name: str) -> bool:
    """Whether the message ``arg`` is the error ``name`` itself, ``str(name)`` or an
    f-string holding ``{name}``."""
    if isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name) and arg.func.id == "str":
        arg = arg.args[0] if arg.args else arg
    if isinstance(arg, ast.Name):
        return arg.id == name
    return any(
        isinstance(f, ast.FormattedValue) and isinstance(f.value, ast.Name) and f.value.id == name
        for f in ast.walk(arg)
    )


def test_the_retype_finder_finds_planted_re_raises() -> None:
    planted = (
        "try:\n    load()\nexcept ManifestError as e:\n    raise TrainerError(str(e)) from None\n"
        "try:\n    draw()\nexcept (OSError, SplitError) as error:\n"
        "    raise TrainerError(f'{path}: {error}') from None\n"
        "try:\n    draw()\nexcept SplitError as error:\n"
        "    raise SplitError(f'{path}: {error}') from None\n"  # context added, same type
        "try:\n    lock()\nexcept LockHeld as error:\n"
        "    raise TrainerError(f'in use by {error.holder}') from None\n"  # a new message
        "try:\n    parse()\nexcept TrainerError as error:\n    raise TrainerError(str(error))\n"
    )
    caught = {"ManifestError", "SplitError", "LockHeld"}
    assert retyped_errors(planted, caught) == [3, 7]


def test_the_trainer_lets_pipeline_errors_through_under_one_root() -> None:
    """One error root (pipeline/errors.py): the command lines print any NCoreError as one
    line, so the trainer never catches a pipeline error only to raise it as its own."""
    from pipeline.errors import NCoreError, PipelineError
    from pipeline.manifest import ManifestError
    from trainer.errors import TrainerError

    assert issubclass(TrainerError, NCoreError) and issubclass(ManifestError, NCoreError)
    assert not issubclass(TrainerError, PipelineError)
    caught = pipeline_error_names()
    assert {"PipelineError", "ManifestError", "ShardDamaged", "LockHeld"} <= caught
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / "trainer").rglob("*.py"))
        for line in retyped_errors(path.read_text(encoding="utf-8"), caught)
    ]
    assert found == []


# ----- one executor policy ---------------------------------------------------------------
POOLS = re.compile(
    r"\bProcessPoolExecutor\(|\bget_context\(|\bset_start_method\(|\bmultiprocessing\.Pool\("
    r"|\bmultiprocessing\.Process\(|\bset_forkserver_preload\("
)


def pool_spellings(files: dict[str, str]) -> list[str]:
    """``path:line`` of every process pool or start method made in ``files``."""
    return lines_matching(files, POOLS)


def test_the_pool_finder_finds_planted_pools() -> None:
    planted = {
        "a.py": "with ProcessPoolExecutor(2) as pool:\n",
        "b.py": "x = 1\nctx = multiprocessing.get_context('spawn')\n",
        "c.py": "from concurrent.futures import ProcessPoolExecutor\nwith worker_pool(2) as p:\n",
        "d.py": "mp.set_start_method('fork')\n",
    }
    assert pool_spellings(planted) == ["a.py:1", "b.py:2", "d.py:1"]


def test_every_process_pool_is_made_by_pipeline_workers() -> None:
    """One executor policy (pipeline/workers.py): one start method, workers that die with
    their command; perturb, selectivity, the listening page, the studies, the benchmarks
    and the tests all take their pools from it."""
    files = {
        str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
        for folder in ("pipeline", "trainer", "bench", "studies", "tests")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path not in (ROOT / "pipeline" / "workers.py", Path(__file__).resolve())
    }
    assert pool_spellings(files) == []
    from pipeline.workers import START_METHOD

    assert START_METHOD in ("forkserver", "spawn")  # never fork
