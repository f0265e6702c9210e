"""What decides one bench training's result, hashed: the key its saved record (runs/done) is
reused by.

A variant's hash covers only the params it reads. Baseline and knowledge never build the prompt
generator and never distil (cotpd.model.student), so train.prompt and train.distill are left out of
their hashes: a distillation lever, or a new default for one, retrains CoTPD and not the baselines
and knowledge views around it. Likewise an NER dataset has no entity markers, so train.marker_init
is left out of its hashes. Not decisive for any training: where its files and runs go and the
upstream stages' settings (their outputs are data the bench prepares once).

Records saved before the hash was per variant hold LEGACY hashes (the whole mapping). A legacy hash
still equals the current params' legacy hash only if those params are unchanged since the training,
so Bench.done_record re-keys such a record to its variant's hash instead of training it again."""
from __future__ import annotations

from ..params import params_hash

NOT_DECISIVE = ("tracking", "pipeline", "llm", "captions", "augment")
COTPD_ONLY = ("prompt", "distill")  # train.* that only the cotpd variant reads
RE_ONLY = ("marker_init",)  # train.* that only an RE dataset reads (cotpd.model.encoder)


def config_hash(raw: dict, variant: str, key: str, grains: list[str] | None, legacy: bool = False) -> str:
    """The hash of one training: `raw` is its dataset's resolved params mapping as written."""
    decisive = {k: v for k, v in raw.items() if k not in NOT_DECISIVE}
    if not legacy:
        unread = (COTPD_ONLY if variant != "cotpd" else ()) + (RE_ONLY if raw["dataset"].get("task") != "re" else ())
        decisive["train"] = {k: v for k, v in (decisive.get("train") or {}).items() if k not in unread}
    return params_hash({"params": decisive, "grains": grains, "key": key})
