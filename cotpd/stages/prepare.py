"""Stage 'prepare': read the published splits, validate every line, write normalized JSONL.

Outputs `Layout(root, dataset).raw(split)` for train / valid / test. All splits are read and
validated BEFORE the first file is written, and each file is written atomically, so a bad line
anywhere leaves no output at all (and the previous outputs, if any, untouched).

Captions and knowledge are joined by their own stages; here we only report the coverage of the
dataset's precomputed knowledge (if it has any) so a misaligned knowledge file fails early.
"""
from __future__ import annotations

from pathlib import Path

from .. import readers
from ..io import shown
from ..params import Layout, Params, dataset_params
from ..records import SPLITS, write_records


def run(dataset: str, root: Path, params: Params | dict, **resources) -> dict:
    root = Path(root)
    dparams = dataset_params(params, dataset)
    ds = dparams.dataset
    layout = Layout(root, dataset)

    data = readers.read_dataset(dparams, root, SPLITS)  # raises DataError on the first bad line
    knowledge = {}
    if ds.knowledge is not None:
        for split, (samples, _) in data.items():
            knowledge[split] = readers.load_precomputed_knowledge(dparams, root, split, samples).stats

    summary: dict = {"dataset": dataset, "task": ds.task, "format": ds.format,
                     "splits": {}, "outputs": {}}
    image_ids: set[str] = set()
    for split, (samples, stats) in data.items():
        summary["splits"][split] = stats
        image_ids.update(s.image_id for s in samples if s.image_id)
    summary["image_ids"] = len(image_ids)
    if ds.images:  # the sample ships its images; real data has none (images: null)
        folder = layout.resolve_input(dparams, ds.images)
        present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        missing = sorted(image_ids - present)
        summary["images"] = {"present": len(image_ids) - len(missing), "missing": len(missing),
                             "missing_ids": missing[:20]}
    if knowledge:
        summary["knowledge"] = knowledge

    for split, (samples, _) in data.items():
        path = layout.raw(split)
        write_records(path, samples)
        summary["outputs"][split] = shown(path, root)
    summary["samples"] = sum(len(s) for s, _ in data.values())
    return summary
