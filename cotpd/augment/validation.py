"""Great Expectations suite over the augmented training set: bad rows block training.

The augmented samples become one pandas row each (their tokens, labels or spans, meta, the origin
record looked up in the training split, and where a copy or the origin was found), and a GX 1.x
suite asserts the rules on them: built-in expectations where GX has one (regex, value sets,
uniqueness, nulls), and for the rest the named custom expectations of `cotpd.augment.expectations`
(valid IOB2, tokens and labels aligned, entities preserved by each augmentation type, ...). Each
expectation carries the name of the check it implements (CHECKS) in its meta.

The suite runs in an ephemeral context through a Checkpoint whose UpdateDataDocsAction writes the
Data Docs (suite and validation result as a static site) to outputs/<ds>/data_docs/index.html. The
failing rows of every failed expectation go to Layout.quarantine with the checks and expectations
they failed, and the report says success=False: the augment stage then raises (so `dvc repro`
stops) and the Dagster asset check blocks the training assets. Our own pipeline already rejects
bad LLM output before this point, so a failure here means a bug or a corrupted file, not a weak LLM.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import great_expectations as gx
import pandas as pd
from great_expectations.checkpoint import UpdateDataDocsAction
from great_expectations.data_context.types.base import (DataContextConfig, InMemoryStoreBackendDefaults,
                                                         ProgressBarsConfig)
from great_expectations.expectations.row_conditions import Column

from ..captions.table import read_caption_table
from ..errors import DataError
from ..io import read_jsonl, write_jsonl
from ..params import Layout, Params, dataset_params
from ..records import SPLITS, NerSample, ReSample, Sample, from_dict, read_records, to_dict
from . import expectations as X
from .common import AUG_TYPES, STRICT_YES, dup_key
from .labels import spans_from_iob2

log = logging.getLogger(__name__)

SUITE = "augmented_dataset"
DOCS_SITE = "augmented_data_docs"

# check -> what it asserts (NER wording / RE wording); each is one or more expectations below
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
    "aug_type_known": f"the augmentation type is one of {', '.join(AUG_TYPES)}",
    "unique_id": "no two augmented rows share an id",
}


@dataclass
class ExpectationOutcome:
    name: str  # the check (a key of CHECKS)
    expectation: str  # the Great Expectations expectation type
    column: str  # its column(s), comma-separated
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
    data_docs: str | None = None  # the Data Docs site's index.html

    @property
    def failed(self) -> list[str]:
        """The failed checks, in suite order."""
        return list(dict.fromkeys(r.name for r in self.results if not r.success))

    def to_dict(self) -> dict:
        return asdict(self) | {"failed": self.failed}


COLUMNS = ["row", "id", "aug", "origin", "origin_split", "origin_found_in", "duplicate_of", "text", "caption",
           "tokens", "fact_check_verdict", "fact_check_answer", "record", "origin_record"]
TASK_COLUMNS = {"ner": ["labels"], "re": ["relation", "head", "tail"]}


def _row(i: int, s: Sample, task: str, train: dict[str, Sample], heldout: set[str], copies: dict[tuple, str]) -> dict:
    meta = s.meta or {}
    aug, origin = meta.get("aug"), meta.get("origin")
    check = meta.get("fact_check") or {}
    row = {"row": i, "id": s.id, "aug": aug, "origin": origin,
           "origin_split": meta.get("origin_split", "train"),  # as the row declares it
           # where the origin id is actually found: a held-out id wins over a training one
           "origin_found_in": "heldout" if origin in heldout else "train" if origin in train else "missing",
           "duplicate_of": copies.get(dup_key(s, with_caption=aug == "image")),  # a training id, or None
           "text": " ".join(s.tokens), "caption": s.caption or "", "tokens": list(s.tokens),
           "fact_check_verdict": check.get("verdict") or "", "fact_check_answer": check.get("answer") or "",
           "record": to_dict(s), "origin_record": to_dict(train[origin]) if origin in train else None}
    # a row of the other task gets None there, which fails the task's rules
    if task == "re":
        re_row = isinstance(s, ReSample)
        return row | {"relation": s.relation if re_row else None, "head": asdict(s.head) if re_row else None,
                      "tail": asdict(s.tail) if re_row else None}
    return row | {"labels": list(s.labels) if isinstance(s, NerSample) else None}


def build_frame(augmented: list[Sample], task: str, train: list[Sample], heldout_ids: set[str],
                captions: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per augmented sample, with its origin looked up in `train` and any training sample
    it copies (by `dup_key`; image rows with the origin's real caption, from `captions` first)."""
    captions = captions or {}
    by_id = {s.id: s for s in train}
    copies: dict[tuple, str] = {}
    for s in train:
        real = (captions.get(s.image_id) if s.image_id else None) or s.caption
        copies.setdefault(dup_key(s), s.id)
        copies.setdefault(dup_key(replace(s, caption=real), with_caption=True), s.id)
    return pd.DataFrame([_row(i, s, task, by_id, heldout_ids, copies) for i, s in enumerate(augmented)],
                        columns=COLUMNS + TASK_COLUMNS[task])


def build_expectations(task: str, scheme: set[str]) -> list:
    """The suite's expectations for a task's rows, in CHECKS order. Each one's meta names its check,
    and its description (what Data Docs shows) the rule it states."""
    E = gx.expectations
    on = {aug: Column("aug") == aug for aug in AUG_TYPES}  # row conditions
    pair = {"column_A": "record", "column_B": "origin_record"}
    if task == "re":
        task_rules = [
            ("aligned", "head and tail spans lie inside the tokens and hold their names",
             X.ExpectRelationArgumentsToMatchTheirSpans(column_list=["tokens", "head", "tail"])),
            ("in_scheme", "the relation is one of the training split's",
             E.ExpectColumnValuesToBeInSet(column="relation", value_set=sorted(scheme))),
            ("well_formed", "head and tail are non-empty and do not overlap",
             X.ExpectRelationArgumentsToBeDisjoint(column_A="head", column_B="tail"))]
    else:
        task_rules = [
            ("aligned", "as many labels as tokens",
             X.ExpectTokensAndLabelsToAlign(column_A="tokens", column_B="labels")),
            ("in_scheme", "every label is O or B-/I- of a dataset entity type",
             X.ExpectLabelsToBeInScheme(column="labels", scheme=sorted(scheme))),
            ("well_formed", "labels are valid IOB2 (every I-X follows B-X or I-X)",
             X.ExpectLabelsToBeValidIob2(column="labels"))]
    rules = task_rules + [
        ("entities_preserved", "a style rewrite keeps every entity verbatim with its type (RE: head, tail, relation)",
         X.ExpectStyleRewriteToPreserveEntities(**pair, row_condition=on["style"])),
        ("entities_preserved", "an entity swap keeps the entity count and types (RE: the relation; one argument "
         "swapped)", X.ExpectEntitySwapToPreserveTypes(**pair, row_condition=on["entity"])),
        ("entities_preserved", "an imagined-image view keeps the origin's tokens and labels (RE: spans, relation)",
         X.ExpectImageViewToPreserveText(**pair, row_condition=on["image"])),
        ("fact_checked", "an entity swap carries the fact-check verdict yes",
         E.ExpectColumnValuesToBeInSet(column="fact_check_verdict", value_set=["yes"], row_condition=on["entity"])),
        ("fact_checked", "an entity swap's fact-check answer is a bare yes",
         E.ExpectColumnValuesToMatchRegex(column="fact_check_answer", regex=STRICT_YES, row_condition=on["entity"])),
        ("text_non_empty", "the text is not blank", E.ExpectColumnValuesToMatchRegex(column="text", regex=r"\S")),
        ("text_non_empty", "an imagined-image view has a caption",
         E.ExpectColumnValuesToMatchRegex(column="caption", regex=r"\S", row_condition=on["image"])),
        ("origin_in_train", "the row declares a training origin",
         E.ExpectColumnValuesToBeInSet(column="origin_split", value_set=["train"])),
        ("origin_in_train", "its origin id is a training sample, not a valid/test one (no leakage)",
         E.ExpectColumnValuesToBeInSet(column="origin_found_in", value_set=["train"])),
        ("not_duplicate", "no row copies a training sample (duplicate_of names the one it copies)",
         E.ExpectColumnValuesToBeNull(column="duplicate_of")),
        ("aug_type_known", "every row names its augmentation type", E.ExpectColumnValuesToNotBeNull(column="aug")),
        ("aug_type_known", CHECKS["aug_type_known"],
         E.ExpectColumnValuesToBeInSet(column="aug", value_set=list(AUG_TYPES))),
        ("unique_id", CHECKS["unique_id"], E.ExpectColumnValuesToBeUnique(column="id")),
    ]
    for check, rule, exp in rules:
        exp.meta, exp.description = {"check": check}, f"{check}: {rule}"
    return [exp for *_, exp in rules]


def run_suite(df: pd.DataFrame, expectations: list, docs_dir: Path | None = None) -> list[ExpectationOutcome]:
    """Run the expectations on the frame as one suite, through a Checkpoint (which builds the Data
    Docs into `docs_dir` when given); each outcome lists its failing row ids."""
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:  # its INFO chatter buries the stage's own log; a user's setting wins
        gx_log.setLevel(logging.WARNING)
    sites = {}
    if docs_dir is not None:
        if docs_dir.exists():  # rebuilt from this run alone: no page of an older run may linger
            shutil.rmtree(docs_dir)
        sites[DOCS_SITE] = {"class_name": "SiteBuilder",
                            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                              "base_directory": str(docs_dir)}}
    # in-memory stores; our site only (no temporary default site); no usage statistics or progress bars
    ctx = gx.get_context(mode="ephemeral", project_config=DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False), data_docs_sites=sites,
        analytics_enabled=False, progress_bars=ProgressBarsConfig(globally=False)))
    actions = [UpdateDataDocsAction(name="data_docs", site_names=[DOCS_SITE])] if sites else []
    batch_def = ctx.data_sources.add_pandas("augmented").add_dataframe_asset("rows") \
        .add_batch_definition_whole_dataframe("all_rows")
    suite = gx.ExpectationSuite(name=SUITE, expectations=expectations)  # needs the context above
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=SUITE, data=batch_def,
                                                                suite=ctx.suites.add(suite)))
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(
        name="augmented_gate", validation_definitions=[vd], actions=actions,
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row"]}))
    (result,) = checkpoint.run(batch_parameters={"dataframe": df}).run_results.values()
    ids = df["id"].tolist()
    outcomes = []
    for r in result.results:
        cfg = r.expectation_config
        rows = sorted({int(u["row"]) for u in (r.result or {}).get("unexpected_index_list") or []})
        if not r.success and not rows and len(df):
            raise RuntimeError(f"Great Expectations failed {cfg.type} ({cfg.meta['check']}) without naming "
                               f"rows: {r.exception_info}")
        kw = cfg.kwargs
        columns = kw.get("column_list") or [kw[k] for k in ("column", "column_A", "column_B") if k in kw]
        outcomes.append(ExpectationOutcome(name=cfg.meta["check"], expectation=cfg.type, column=", ".join(columns),
                                           success=bool(r.success), unexpected_count=len(rows),
                                           failed_ids=[ids[i] for i in rows], failed_rows=rows))
    return outcomes


def scheme_of(entity_types: list[str] | None, train: list[Sample]) -> set[str]:
    """Allowed labels (NER) or relations (RE): the dataset's entity_types, else what training uses."""
    if train and isinstance(train[0], ReSample):
        return {s.relation for s in train}
    types = entity_types or sorted({t for s in train for *_, t in spans_from_iob2(s.labels)})
    return {"O"} | {f"{p}-{t}" for t in types for p in ("B", "I")}


def validate_samples(augmented: list[dict], train: list[Sample], heldout_ids: set[str], scheme: set[str],
                     captions: dict[str, str] | None = None, quarantine: str | Path | None = None,
                     docs_dir: str | Path | None = None) -> ValidationReport:
    """Validate augmented records (normalized dicts); write failing rows to `quarantine` and the Data
    Docs to `docs_dir` if given. The task (NER or RE) is that of the training samples."""
    task = "re" if train and isinstance(train[0], ReSample) else "ner"
    df = build_frame([from_dict(d) for d in augmented], task, train, heldout_ids, captions)
    docs = Path(docs_dir) if docs_dir is not None else None
    outcomes = run_suite(df, build_expectations(task, scheme), docs)
    failed: dict[int, dict[str, list[str]]] = {}
    for o in outcomes:
        for i in o.failed_rows:
            row = failed.setdefault(i, {"failed": [], "expectations": []})
            row["failed"] += [o.name] if o.name not in row["failed"] else []
            row["expectations"].append(o.expectation)
    if quarantine is not None:  # written even when empty, so a stale quarantine never outlives a fix
        write_jsonl(quarantine, ({"row": i, "id": augmented[i].get("id"), **failed[i], "record": augmented[i]}
                                 for i in sorted(failed)))
    index = docs / "index.html" if docs is not None else None
    if index is not None and not index.is_file():
        raise RuntimeError(f"Great Expectations built no Data Docs at {index}")
    report = ValidationReport(success=all(o.success for o in outcomes), results=outcomes, n_rows=len(df),
                              n_failed=len(failed), quarantine=str(quarantine) if quarantine is not None else None,
                              data_docs=str(index) if index is not None else None)
    if not report.success:
        log.warning("augmented set failed %s on %d of %d rows (Data Docs: %s)", report.failed, report.n_failed,
                    report.n_rows, report.data_docs)
    return report


def validate_augmented(root: str | Path, dataset: str, params: Params | dict) -> ValidationReport:
    """Validate outputs/<ds>/augmented.jsonl against the raw splits; always (re)writes quarantine.jsonl
    and the Data Docs (outputs/<ds>/data_docs/index.html). `params`: a Params or a raw params dict."""
    layout = Layout(Path(root), dataset)
    dp = dataset_params(params, dataset)
    rows = read_jsonl(layout.augmented)
    for lineno, d in enumerate(rows, start=1):
        try:
            from_dict(d)
        except (TypeError, KeyError) as exc:
            raise DataError(layout.augmented, lineno, f"not a sample record: {exc}") from None
    train = read_records(layout.raw("train"))
    heldout = {s.id for split in SPLITS if split != "train" and layout.raw(split).exists()
               for s in read_records(layout.raw(split))}
    return validate_samples(rows, train, heldout, scheme_of(dp.dataset.entity_types, train),
                            read_caption_table(layout), layout.quarantine, layout.data_docs)
