"""``make demo``: the README quick start on the synthetic corpus, end to end.

Today it runs the first stage only (the manifest); the perturbation and training stages are
wired in as they land.
"""

from __future__ import annotations

import sys
from pathlib import Path

DATA_DIR = Path("data/Synthetic")
MANIFEST_DIR = Path("manifests")
NAME = "synthetic"


def main() -> int:
    """Generate (when absent) and import the synthetic corpus; print what was done."""
    from pipeline.datasets import DatasetError, build_manifest, save_manifest_keeping_views

    manifest_path = MANIFEST_DIR / f"{NAME}.json"
    print(f"$ ncore-prep manifest --dataset synthetic --data-dir {DATA_DIR}")
    try:
        manifest, summary = build_manifest(
            "synthetic", DATA_DIR, NAME, seed=42, protocol="default", manifest_path=manifest_path
        )
        note = save_manifest_keeping_views(manifest, manifest_path)
    except DatasetError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 1
    for line in summary.lines():
        print(line)
    if note:
        print(f"  {note}")
    print(f"wrote {manifest_path}")
    print("perturbation and training stages not wired yet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
