"""Great Expectations suite over the augmented training set: bad rows block training.

Each check is first computed per row as a boolean column in pandas (so a failure names its rows),
then asserted with a Great Expectations 1.x expectation on that column (ephemeral context, pandas
data source, whole-dataframe batch, `ValidationDefinition.run`). The failing rows of every failed
expectation are written to Layout.quarantine together with the expectations they failed, and the
report says success=False: the augment stage then raises (so `dvc repro` stops) and the Dagster
asset check blocks the training assets. Our own pipeline already rejects bad LLM output before
this point, so a failure here means a bug or a corrupted file, not a weak LLM.
"""
from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .augment.common import AUG_TYPES, dup_key, strict_yes
from .augment.labels import is_valid_iob2, spans_from_iob2
from .errors import DataError
from .io import read_jsonl, write_jsonl
from .params import Layout, dataset_params
from .records import SPLITS, ReSample, Sample, from_dict, read_records

log = logging.getLogger(__name__)

# boolean column -> what it asserts (NER wording / RE wording)
CHECKS: dict[str, str] = {
    "aligned": "NER: as many labels as tokens; RE: head/tail spans inside the tokens and equal to their names",
    "in_scheme": "NER: every label is O or B-/I- of a dataset entity type; RE: the relation is a training relation",
    "well_formed": "NER: labels are valid IOB2; RE: head and tail spans are non-empty and do not overlap",
    "entities_preserved": "style: same entity strings and types (RE: same head, tail, relation) as the origin; "
                          "entity: same entity count and types (RE: relation and the other argument kept); "
                          "image: same tokens and labels as the origin",
    "fact_checked": "entity replacements carry a strict 'yes' fact-check verdict",
    "text_non_empty": "non-empty text (and, for image augmentation, a non-empty caption)",
    "origin_in_train": "derived from a training sample, never from a valid/test sample (no leakage)",
    "not_duplicate": "not an exact copy of an original training sample (tokens, RE: + head/tail positions; "
                     "image: + caption)",
}


@dataclass
class ExpectationOutcome:
    name: str
    expectation: str  # the Great Expectations expectation type
    column: str
    success: bool
    unexpected_count: int
    failed_ids: list[str] = field(default_factory=list)
    failed_rows: list[int] = field(default_factory=list)  # 0-based record numbers in augmented.jsonl


@dataclass
class ValidationReport:
    success: bool
    results: list[ExpectationOutcome]
    n_rows: int
    n_failed: int
    quarantine: str | None = None

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if not r.success]

    def to_dict(self) -> dict:
        return asdict(self) | {"failed": self.failed}


def _origin_ok(s: Sample, o: Sample | None) -> bool:
    """The entities_preserved check of one row against its origin."""
    aug = s.meta.get("aug")
    if o is None or type(o) is not type(s):
        return False
    if isinstance(s, ReSample):
        arg = lambda x, span: x.tokens[span.start:span.end]  # noqa: E731
        same = [arg(s, s.head) == arg(o, o.head), arg(s, s.tail) == arg(o, o.tail)]
        if aug == "style":
            return all(same) and s.relation == o.relation
        if aug == "entity":
            return s.relation == o.relation and sum(same) == 1  # exactly one argument swapped
        return s.tokens == o.tokens and all(same) and s.relation == o.relation
    ents = lambda x: Counter((t, " ".join(x.tokens[a:b])) for a, b, t in spans_from_iob2(x.labels))  # noqa: E731
    if aug == "style":
        return ents(s) == ents(o)
    if aug == "entity":
        return Counter(t for t, _ in ents(s).elements()) == Counter(t for t, _ in ents(o).elements())
    return s.tokens == o.tokens and s.labels == o.labels


def row_checks(s: Sample, train: dict[str, Sample], heldout: set[str], scheme: set[str],
               originals: set, caption_of) -> dict[str, bool]:
    """The per-row booleans of CHECKS for one augmented sample."""
    meta = s.meta or {}
    aug, origin = meta.get("aug"), meta.get("origin")
    if isinstance(s, ReSample):
        n = len(s.tokens)
        spans = (s.head, s.tail)
        aligned = all(0 <= sp.start < sp.end <= n and " ".join(s.tokens[sp.start:sp.end]) == sp.name for sp in spans)
        in_scheme = s.relation in scheme
        well = s.head.start < s.head.end and s.tail.start < s.tail.end and (
            s.head.end <= s.tail.start or s.tail.end <= s.head.start)
    else:
        aligned = len(s.tokens) == len(s.labels)
        in_scheme = all(lab in scheme for lab in s.labels)
        well = is_valid_iob2(s.labels)
    check = meta.get("fact_check") or {}
    text_ok = bool(s.tokens) and any(t.strip() for t in s.tokens)
    key = dup_key(s, with_caption=aug == "image")
    return {
        "aligned": bool(aligned),
        "in_scheme": bool(in_scheme),
        "well_formed": bool(well),
        "entities_preserved": bool(aligned and _origin_ok(s, train.get(origin))),
        "fact_checked": aug != "entity" or (check.get("verdict") == "yes" and strict_yes(check.get("answer"))),
        "text_non_empty": text_ok and (aug != "image" or bool((s.caption or "").strip())),
        "origin_in_train": origin in train and origin not in heldout and meta.get("origin_split", "train") == "train",
        "not_duplicate": key not in originals,
    }


def build_frame(augmented: list[Sample], train: list[Sample], heldout_ids: set[str], scheme: set[str],
                captions: dict[str, str] | None = None):
    """One row per augmented sample: id, aug, origin and the boolean columns of CHECKS."""
    import pandas as pd

    captions = captions or {}
    caption_of = lambda s: (captions.get(s.image_id) if s.image_id else None) or s.caption  # noqa: E731
    by_id = {s.id: s for s in train}
    originals = {dup_key(s) for s in train} | {dup_key(replace(s, caption=caption_of(s)), True) for s in train}
    rows = []
    for i, s in enumerate(augmented):
        rows.append({"row": i, "id": s.id, "aug": (s.meta or {}).get("aug"), "origin": (s.meta or {}).get("origin"),
                     **row_checks(s, by_id, heldout_ids, scheme, originals, caption_of)})
    cols = ["row", "id", "aug", "origin", *CHECKS]
    return pd.DataFrame(rows, columns=cols)


def run_suite(df) -> list[ExpectationOutcome]:
    """Run the Great Expectations suite on the frame; each outcome lists its failing row ids."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # no usage statistics from a pipeline run
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:  # its INFO chatter buries the stage's own log; a user's setting wins
        gx_log.setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = ctx.data_sources.add_pandas("augmented").add_dataframe_asset("rows") \
        .add_batch_definition_whole_dataframe("all_rows")
    suite = gx.ExpectationSuite(name="augmented_dataset")
    E = gx.expectations
    for col, desc in CHECKS.items():
        suite.add_expectation(E.ExpectColumnValuesToBeInSet(column=col, value_set=[True], meta={"name": col},
                                                            description=desc))
    suite.add_expectation(E.ExpectColumnValuesToBeInSet(column="aug", value_set=list(AUG_TYPES),
                                                        meta={"name": "aug_type_known"}))
    suite.add_expectation(E.ExpectColumnValuesToBeUnique(column="id", meta={"name": "unique_id"}))
    suite = ctx.suites.add(suite)
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name="augmented_dataset", data=batch_def, suite=suite))
    result = vd.run(batch_parameters={"dataframe": df},
                    result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row"]})
    ids = df["id"].tolist()
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        rows = sorted({int(u["row"]) for u in (r.result or {}).get("unexpected_index_list") or []})
        if not r.success and not rows and len(df):
            raise RuntimeError(f"Great Expectations failed {cfg.type} on {cfg.kwargs.get('column')} "
                               f"without naming rows: {r.exception_info}")
        outcomes.append(ExpectationOutcome(name=cfg.meta["name"], expectation=cfg.type, column=cfg.kwargs["column"],
                                           success=bool(r.success), unexpected_count=len(rows),
                                           failed_ids=[ids[i] for i in rows], failed_rows=rows))
    return outcomes


def scheme_of(dparams: dict, train: list[Sample]) -> set[str]:
    """Allowed labels (NER) or relations (RE): params' entity_types, else what the training split uses."""
    if train and isinstance(train[0], ReSample):
        return {s.relation for s in train}
    types = dparams["dataset"].get("entity_types") or sorted({t for s in train for *_, t in spans_from_iob2(s.labels)})
    return {"O"} | {f"{p}-{t}" for t in types for p in ("B", "I")}


def validate_samples(augmented: list[dict], train: list[Sample], heldout_ids: set[str], scheme: set[str],
                     captions: dict[str, str] | None = None, quarantine: str | Path | None = None) -> ValidationReport:
    """Validate augmented records (normalized dicts); write failing rows to `quarantine` if given."""
    samples = [from_dict(d) for d in augmented]
    df = build_frame(samples, train, heldout_ids, scheme, captions)
    outcomes = run_suite(df)
    failed: dict[int, list[str]] = {}
    for o in outcomes:
        for i in o.failed_rows:
            failed.setdefault(i, []).append(o.name)
    if quarantine is not None:  # written even when empty, so a stale quarantine never outlives a fix
        write_jsonl(quarantine, ({"row": i, "id": augmented[i].get("id"), "failed": failed[i], "record": augmented[i]}
                                 for i in sorted(failed)))
    report = ValidationReport(success=all(o.success for o in outcomes), results=outcomes, n_rows=len(df),
                              n_failed=len(failed),
                              quarantine=str(quarantine) if quarantine is not None else None)
    if not report.success:
        log.warning("augmented set failed %s on %d of %d rows", report.failed, report.n_failed, report.n_rows)
    return report


def validate_augmented(root: str | Path, dataset: str, params: dict) -> ValidationReport:
    """Validate outputs/<ds>/augmented.jsonl against the raw splits; always (re)writes quarantine.jsonl."""
    layout = Layout(Path(root), dataset)
    dparams = dataset_params(params, dataset)
    rows = read_jsonl(layout.augmented)
    for lineno, d in enumerate(rows, start=1):
        try:
            from_dict(d)
        except (TypeError, KeyError) as exc:
            raise DataError(layout.augmented, lineno, f"not a sample record: {exc}") from None
    train = read_records(layout.raw("train"))
    heldout = {s.id for split in SPLITS if split != "train" and layout.raw(split).exists()
               for s in read_records(layout.raw(split))}
    captions = {}
    if layout.captions.exists():
        captions = {r["image_id"]: r["caption"] for r in read_jsonl(layout.captions) if r.get("caption")}
    return validate_samples(rows, train, heldout, scheme_of(dparams, train), captions, layout.quarantine)
