"""The model-name grammar, parsed in this one place: `<base>[+align][+contrast][+shuffled]`, and
`lightgcn[+desc]` for the graph model.

`popularity`, `mind`, `comirec_dr`, `comirec_sa`, `remi` (ComiRec-SA trained as REMI) and `sasrec`
(one interest) are the base models; a neural base may carry the
dual-level variants, in this order: `+align` trains with the alignment of the user's semantic
clusters to its interests, `+contrast` with the contrastive loss on the synthesized users'
clusters (`comirec_sa+align+contrast` is the full dual-level model). `+shuffled`, last, is the
random-cluster control of the losses before it: the same losses on clusters whose items are
re-partitioned at random with the same sizes (rec_core.interests.coherence.shuffled_clusters).

`lightgcn` (rec_core.models.lightgcn) embeds users and items on the user-item graph instead of
reading a history; `lightgcn+desc` adds the GaCLLM graph-hop descriptions (jobs.describe), aligned
with and fused into its layer embeddings. The history-based losses (+align, +contrast) do not apply
to it, and +desc applies to nothing else.

`fpmc`, `stamp` and `gru4rec` (rec_core.session.models) are session-based backbones, trained and
evaluated on the session protocol only; `+student` builds one at the student size
(`session.student_dim`) instead of the teacher's (`session.teacher_dim`). `<base>+student+distill`
is that student fine-tuned by ALKDRec's distillation (jobs.distill) from the teacher `<base>`;
options after dots override the `distill` section for that model, in any order: a selection
policy (alkdrec, binary, random, easiest, hardest), a teacher backend (llm, encoder, teacher) and a
budget (a number of sessions), e.g. `fpmc+student+distill.random.llm.250`.

It lives in `rec_core.models` because a name says which model is built, and it imports nothing (no
torch), so config validation (`rec_core.run.config`), the training recipe, Ray Train and the
refresh DAG (which stages a set of models needs) all use it without loading a model.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_MODELS = ("popularity", "mind", "comirec_dr", "comirec_sa", "remi", "sasrec", "lightgcn", "fpmc", "stamp",
               "gru4rec")
NEURAL_BASES = ("mind", "comirec_dr", "comirec_sa", "remi", "sasrec", "lightgcn", "fpmc", "stamp", "gru4rec")
GRAPH_BASES = ("lightgcn",)  # trained on the user-item graph (rec_core.graph), not on histories
SESSION_BASES = ("fpmc", "stamp", "gru4rec")  # session protocol only (rec_core.session)
HISTORY_BASES = tuple(base for base in NEURAL_BASES
                      if base not in GRAPH_BASES + SESSION_BASES)  # read a user's history
VARIANTS = ("align", "contrast", "shuffled")  # the history models' suffixes, in their only allowed order
GRAPH_VARIANTS = ("desc",)
SESSION_VARIANTS = ("student", "distill")  # the student size; then distilled from the teacher
DISTILL_POLICIES = ("alkdrec", "binary", "random", "easiest", "hardest")  # rec_core.session.selection
DISTILL_TEACHERS = ("llm", "encoder", "teacher")  # rec_core.session.teachers
AUXILIARY = ("align", "contrast")  # the variants that add a loss on clusters


@dataclass(frozen=True)
class ModelName:
    base: str
    variants: tuple[str, ...]
    distill_options: tuple[tuple[str, object], ...] = ()  # (("selection", "random"), ("budget", 250), ...)

    @property
    def aligned(self) -> bool:
        return "align" in self.variants

    @property
    def contrastive(self) -> bool:
        return "contrast" in self.variants

    @property
    def shuffled(self) -> bool:
        return "shuffled" in self.variants

    @property
    def described(self) -> bool:
        return "desc" in self.variants

    @property
    def graph(self) -> bool:
        return self.base in GRAPH_BASES

    @property
    def session(self) -> bool:
        return self.base in SESSION_BASES

    @property
    def student(self) -> bool:
        return "student" in self.variants

    @property
    def distilled(self) -> bool:
        return "distill" in self.variants

    @property
    def teacher(self) -> str:
        """A distilled model's conventional teacher (the base at teacher size)."""
        return self.base

    @property
    def student_name(self) -> str:
        """The trained student a distilled model starts from."""
        return f"{self.base}+student"

    @property
    def neural(self) -> bool:
        return self.base in NEURAL_BASES


def _distill_options(name: str, options: list[str]) -> tuple[tuple[str, object], ...]:
    found: dict[str, object] = {}
    for option in options:
        key = ("selection" if option in DISTILL_POLICIES else "teacher" if option in DISTILL_TEACHERS
               else "budget" if option.isdigit() and int(option) > 0 else None)
        if key is None or key in found:
            raise ValueError(f"model {name!r}: distill options are one policy ({', '.join(DISTILL_POLICIES)}), "
                             f"one teacher ({', '.join(DISTILL_TEACHERS)}) and one budget (a positive number), "
                             f"each at most once; got {option!r}")
        found[key] = int(option) if key == "budget" else option
    return tuple(sorted(found.items()))


def parse_model_name(name: str) -> ModelName:
    """"comirec_sa+align+contrast" -> ModelName("comirec_sa", ("align", "contrast")); ValueError
    with the reason for anything outside the grammar."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    base, *variants = name.split("+")
    if base not in BASE_MODELS:
        raise ValueError(f"unknown model {name!r}: the base must be one of {', '.join(BASE_MODELS)}")
    if base in GRAPH_BASES:
        if variants not in ([], list(GRAPH_VARIANTS)):
            raise ValueError(f"model {name!r}: {base} takes only +{'/+'.join(GRAPH_VARIANTS)} (the graph-hop "
                             "descriptions); +align and +contrast need a history model")
        return ModelName(base, tuple(variants))
    if base in SESSION_BASES:
        options = variants[-1].split(".")[1:] if variants else []
        variants = [variant.split(".")[0] for variant in variants]
        if variants not in ([], ["student"], list(SESSION_VARIANTS)) or (options and variants[-1:] != ["distill"]):
            raise ValueError(f"model {name!r}: {base} takes only +student (the student size), then +distill"
                             "[.options] (the student distilled from the teacher)")
        return ModelName(base, tuple(variants), _distill_options(name, options))
    if variants and base not in NEURAL_BASES:
        raise ValueError(f"model {name!r}: only {', '.join(HISTORY_BASES)} take +{'/+'.join(VARIANTS)}")
    in_order = [v for v in VARIANTS if v in variants]
    if variants != in_order:
        raise ValueError(f"model {name!r}: the suffixes are +{' and +'.join(VARIANTS)}, each at most once, "
                         "in that order")
    if "shuffled" in variants and not any(v in AUXILIARY for v in variants):
        raise ValueError(f"model {name!r}: +shuffled is the control of +align / +contrast and needs one of them")
    return ModelName(base, tuple(variants))


def is_known_model(name: str) -> bool:
    try:
        parse_model_name(name)
    except ValueError:
        return False
    return True


def base_model(name: str) -> str:
    return parse_model_name(name).base


def is_aligned(name: str) -> bool:
    return parse_model_name(name).aligned


def is_contrastive(name: str) -> bool:
    return parse_model_name(name).contrastive


def is_described(name: str) -> bool:
    return parse_model_name(name).described


def is_neural(name: str) -> bool:
    return parse_model_name(name).neural


def is_distilled(name: str) -> bool:
    return parse_model_name(name).distilled
