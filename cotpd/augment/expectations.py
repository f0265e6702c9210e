"""Custom Great Expectations for augmented samples: one Expectation class per rule that GX has no
built-in for (the suite in `validation` uses built-ins for everything else).

GX 1.x wiring: each rule is a row-wise metric (a Column/ColumnPair/MulticolumnMapMetricProvider
registered under its `condition_metric_name`) and an Expectation whose `map_metric` names it; GX
then counts, lists and renders the failing rows like a built-in's. Pandas only: the suite runs on
an in-memory frame. The rules are plain functions of one row's values; the classes only tell GX
where to apply them. A missing value (None) fails a rule rather than being skipped.
"""
from __future__ import annotations

from collections import Counter
from typing import List, Literal

import pandas as pd
from great_expectations.execution_engine import PandasExecutionEngine
from great_expectations.expectations.expectation import (ColumnMapExpectation, ColumnPairMapExpectation,
                                                         MulticolumnMapExpectation)
from great_expectations.expectations.metrics.map_metric_provider import (ColumnMapMetricProvider,
                                                                         ColumnPairMapMetricProvider,
                                                                         MulticolumnMapMetricProvider,
                                                                         column_condition_partial,
                                                                         column_pair_condition_partial,
                                                                         multicolumn_condition_partial)

from ..records import ReSample, Sample, from_dict
from .labels import is_valid_iob2, spans_from_iob2


# --- the rules -----------------------------------------------------------------------------------
def span_holds_name(tokens: list | None, span: dict | None) -> bool:
    """An RE argument {start, end, name}: a non-empty span inside the tokens whose text is its name."""
    if tokens is None or span is None:
        return False
    start, end = span["start"], span["end"]
    return 0 <= start < end <= len(tokens) and " ".join(tokens[start:end]) == span["name"]


def spans_disjoint(head: dict | None, tail: dict | None) -> bool:
    """Head and tail are non-empty and do not overlap."""
    if head is None or tail is None:
        return False
    return (head["start"] < head["end"] and tail["start"] < tail["end"]
            and (head["end"] <= tail["start"] or tail["end"] <= head["start"]))


def _aligned(s: Sample) -> bool:
    if isinstance(s, ReSample):
        return all(span_holds_name(s.tokens, vars(sp)) for sp in (s.head, s.tail))
    return len(s.tokens) == len(s.labels)


def _entities(s: Sample) -> Counter:
    """(type, text) of each NER entity."""
    return Counter((t, " ".join(s.tokens[a:b])) for a, b, t in spans_from_iob2(s.labels))


def _arguments_same(s: ReSample, o: ReSample) -> list[bool]:
    return [s.tokens[a.start:a.end] == o.tokens[b.start:b.end] for a, b in ((s.head, o.head), (s.tail, o.tail))]


def style_preserves(s: Sample, o: Sample) -> bool:
    """A style rewrite keeps every entity verbatim with its type (RE: the same head, tail and relation)."""
    if isinstance(s, ReSample):
        return all(_arguments_same(s, o)) and s.relation == o.relation
    return _entities(s) == _entities(o)


def swap_preserves(s: Sample, o: Sample) -> bool:
    """An entity swap keeps the entity count and types (RE: the relation, and swaps exactly one argument)."""
    if isinstance(s, ReSample):
        return s.relation == o.relation and sum(_arguments_same(s, o)) == 1
    return Counter(t for t, _ in _entities(s).elements()) == Counter(t for t, _ in _entities(o).elements())


def image_view_preserves(s: Sample, o: Sample) -> bool:
    """An imagined image only adds a caption: tokens and labels (RE: spans, relation) are the origin's."""
    if isinstance(s, ReSample):
        return s.tokens == o.tokens and all(_arguments_same(s, o)) and s.relation == o.relation
    return s.tokens == o.tokens and s.labels == o.labels


def _against_origin(rule, record: dict | None, origin: dict | None) -> bool:
    """`rule` on a row and its origin (record dicts): a row must be aligned to carry its entities, and
    an origin of the other task (or none) preserves nothing."""
    if record is None or origin is None:
        return False
    s, o = from_dict(record), from_dict(origin)
    return type(s) is type(o) and _aligned(s) and rule(s, o)


def _rowwise(rule, *columns: pd.Series) -> pd.Series:
    """A boolean Series (GX's map-metric contract) of `rule` over the rows of `columns`."""
    return pd.Series([bool(rule(*values)) for values in zip(*columns)], index=columns[0].index, dtype=bool)


# --- metrics -------------------------------------------------------------------------------------
_PAIR_KEYS = ("batch_id", "table", "column_A", "column_B", "row_condition", "condition_parser", "ignore_row_if")


class LabelsValidIob2(ColumnMapMetricProvider):
    condition_metric_name = "column_values.valid_iob2"
    filter_column_isnull = False

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, **kwargs):
        return _rowwise(lambda labels: labels is not None and is_valid_iob2(labels), column)


class LabelsInScheme(ColumnMapMetricProvider):
    condition_metric_name = "column_values.labels_in_scheme"
    condition_value_keys = ("scheme",)
    filter_column_isnull = False

    @column_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column, scheme, **kwargs):
        allowed = set(scheme)
        return _rowwise(lambda labels: labels is not None and set(labels) <= allowed, column)


class TokensLabelsAligned(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.tokens_labels_aligned"
    condition_domain_keys = _PAIR_KEYS

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A, column_B, **kwargs):
        return _rowwise(lambda t, lab: t is not None and lab is not None and len(t) == len(lab), column_A, column_B)


class ArgumentsHoldNames(MulticolumnMapMetricProvider):
    condition_metric_name = "multicolumn_values.arguments_hold_names"
    condition_domain_keys = ("batch_id", "table", "column_list", "row_condition", "condition_parser", "ignore_row_if")

    @multicolumn_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_list, **kwargs):  # column_list: the frame of [tokens, head, tail]
        tokens, head, tail = (column_list[c] for c in column_list.columns)
        return _rowwise(lambda t, h, tl: span_holds_name(t, h) and span_holds_name(t, tl), tokens, head, tail)


class ArgumentsDisjoint(ColumnPairMapMetricProvider):
    condition_metric_name = "column_pair_values.arguments_disjoint"
    condition_domain_keys = _PAIR_KEYS

    @column_pair_condition_partial(engine=PandasExecutionEngine)
    def _pandas(cls, column_A, column_B, **kwargs):
        return _rowwise(spans_disjoint, column_A, column_B)


def _origin_metric(name: str, rule) -> type[ColumnPairMapMetricProvider]:
    """A row-wise metric over (record, origin record) that holds where `rule(record, origin)` does;
    GE registers the class under `column_pair_values.<name>` as it is created."""

    class _AgainstOrigin(ColumnPairMapMetricProvider):
        condition_metric_name = f"column_pair_values.{name}"
        condition_domain_keys = _PAIR_KEYS

        @column_pair_condition_partial(engine=PandasExecutionEngine)
        def _pandas(cls, column_A, column_B, **kwargs):
            return _rowwise(lambda r, o: _against_origin(rule, r, o), column_A, column_B)

    _AgainstOrigin.__name__ = _AgainstOrigin.__qualname__ = "".join(w.title() for w in name.split("_"))
    return _AgainstOrigin


# one per augmentation type: what its rewrite must keep of the sample it came from
StylePreserves = _origin_metric("style_preserves_entities", style_preserves)
SwapPreserves = _origin_metric("swap_preserves_types", swap_preserves)
ImageViewPreserves = _origin_metric("image_view_preserves_text", image_view_preserves)


# --- expectations --------------------------------------------------------------------------------
class ExpectLabelsToBeValidIob2(ColumnMapExpectation):
    """Each value (a NER label sequence) is valid IOB2: every I-X follows B-X or I-X."""
    map_metric = "column_values.valid_iob2"


class ExpectLabelsToBeInScheme(ColumnMapExpectation):
    """Each label of each value (a NER label sequence) is O or B-/I- of a dataset entity type."""
    scheme: List[str]
    map_metric = "column_values.labels_in_scheme"
    success_keys = ("scheme", "mostly")
    args_keys = ("column", "scheme")


class _RowPairExpectation(ColumnPairMapExpectation):
    """A pair rule applied to every row: a missing value fails it instead of skipping the row."""
    ignore_row_if: Literal["both_values_are_missing", "either_value_is_missing", "neither"] = "neither"
    success_keys = ("column_A", "column_B", "ignore_row_if", "mostly")


class ExpectTokensAndLabelsToAlign(_RowPairExpectation):
    """column_A (tokens) and column_B (labels) have the same length in every row."""
    map_metric = "column_pair_values.tokens_labels_aligned"


class ExpectRelationArgumentsToMatchTheirSpans(MulticolumnMapExpectation):
    """column_list = [tokens, head, tail]: each argument's span lies inside the tokens and its text is
    the argument's name."""
    ignore_row_if: Literal["all_values_are_missing", "any_value_is_missing", "never"] = "never"
    map_metric = "multicolumn_values.arguments_hold_names"
    success_keys = ("column_list", "ignore_row_if", "mostly")


class ExpectRelationArgumentsToBeDisjoint(_RowPairExpectation):
    """column_A (head) and column_B (tail) are non-empty spans that do not overlap."""
    map_metric = "column_pair_values.arguments_disjoint"


class ExpectStyleRewriteToPreserveEntities(_RowPairExpectation):
    """column_A (a style rewrite) keeps every entity of column_B (its origin) verbatim, with its type;
    RE: the same head, tail and relation."""
    map_metric = "column_pair_values.style_preserves_entities"


class ExpectEntitySwapToPreserveTypes(_RowPairExpectation):
    """column_A (an entity swap) has the entity count and types of column_B (its origin); RE: the
    relation is kept and exactly one argument is swapped."""
    map_metric = "column_pair_values.swap_preserves_types"


class ExpectImageViewToPreserveText(_RowPairExpectation):
    """column_A (an imagined-image view) has the tokens and labels (RE: spans, relation) of column_B
    (its origin): only the caption is new."""
    map_metric = "column_pair_values.image_view_preserves_text"
