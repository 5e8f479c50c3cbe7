"""Stage `student` for causal LMs: token-level distillation, beside a no-KD twin.

The student is a layer-dropped copy of the teacher (``num_layers`` evenly spaced, chosen by
measured importance or as the least-changing contiguous block with ``layer_selection``, or
explicit ``layers``; optionally narrowed to the most active MLP neurons and attention heads
with ``mlp_keep`` / ``heads_keep``, see :mod:`distill.tasks.causal_lm.pruning`), a
config-built model of the teacher's family, or another pre-trained causal LM with the very
same tokenizer (token-level KD compares distributions id by id: a mismatched pair is
refused, naming both). It learns from the teacher's cached top-k logits, from tokens sampled
from its distribution and cached, or from the teacher online (``student.teacher_outputs``)
with the chosen divergence, and with ``on_policy_fraction`` > 0 also from its own sampled
continuations scored by the teacher online (:mod:`distill.tasks.causal_lm.on_policy`); its
twin has the same architecture, initialisation and budget and learns from the text alone.

Outputs: ``model/``, ``baseline/model/``, ``log_history.json`` for each; metrics hold
validation and test perplexity after training and, under ``before_training``, those of the
initial student (the twin starts from the same weights): what cutting the teacher cost and
what training recovered. ``built`` records how the student was made (the scores behind a
measured choice included); ``on_policy`` the on-policy settings and counts, when on.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from torch import nn
from transformers import set_seed

from distill.config import DataConfig, StudentConfig, StudentTable
from distill.pipeline.artifacts import RunContext
from distill.tasks.causal_lm.files import read_split
from distill.tasks.causal_lm.models import check_same_tokenizer, drop_layers
from distill.tasks.causal_lm.on_policy import (
    OnPolicyConfig,
    OnPolicyDistillation,
    eos_token_ids,
)
from distill.tasks.causal_lm.pruning import calibration_sample, choose_layers, prune_width
from distill.tasks.causal_lm.stages.labels import load_sampled, load_top_k
from distill.tasks.causal_lm.task import calibrates, on_policy_divergence
from distill.tasks.causal_lm.training import (
    as_dataset,
    encode_texts,
    load_causal_lm,
    perplexity,
    prepare_tokenizer,
    resolve_causal_lm,
    train_causal,
)
from distill.train.models import (
    evenly_spaced_layers,
    freeze,
    load_tokenizer,
    parameter_counts,
    with_supported_attention,
)
from distill.train.trainer import TrainingRun, finish_training, save_trained_model


def build_student(
    config: StudentConfig,
    teacher: nn.Module,
    teacher_tokenizer: Any,
    ctx: RunContext,
    calibration: list[list[int]] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """The initial student and how it was built; ``calibration`` (token ids of training
    texts) is what a measured layer selection and width pruning score on."""
    set_seed(ctx.seed)
    if config.init == "pretrained":
        assert config.model is not None  # checked by the recipe
        source = resolve_causal_lm(
            config.model, ctx.recipe_dir, "student.model", config.trust_remote_code, config.archive
        )
        tokenizer = load_tokenizer(
            source, "student.model", config.revision, config.trust_remote_code
        )
        check_same_tokenizer(
            teacher_tokenizer, tokenizer, "the teacher", f"student.model {config.model!r}"
        )
        model = load_causal_lm(source, "student.model", config.revision, config.trust_remote_code)
        return model, {"init": "pretrained", "model": config.model}
    total = teacher.config.num_hidden_layers
    if config.init == "teacher-layers":
        pad_id = teacher_tokenizer.pad_token_id
        if calibrates(config) and not calibration:
            raise ValueError("a measured layer selection or width pruning needs calibration text")
        selection: dict[str, Any] = {}
        if config.layers:
            layers = list(config.layers)
        elif config.layer_selection == "even":
            layers = evenly_spaced_layers(total, config.num_layers or total)
        else:
            assert calibration is not None and config.num_layers is not None  # checked above
            layers, selection = choose_layers(
                teacher, config.layer_selection, config.num_layers, calibration, pad_id
            )
        student = drop_layers(teacher, layers)
        width = prune_width(
            student,
            calibration or [],
            pad_id,
            mlp_keep=config.mlp_keep,
            heads_keep=config.heads_keep,
        )
        built = {"init": "teacher-layers", "teacher_layers": layers, **selection, **width}
        return student, built
    from transformers import AutoModelForCausalLM

    settings = copy.deepcopy(teacher.config)
    overrides = dict(config.config or {})
    if config.num_layers is not None:
        overrides.setdefault("num_hidden_layers", config.num_layers)
    for key, value in overrides.items():
        setattr(settings, key, value)
    return with_supported_attention(AutoModelForCausalLM.from_config, settings), {
        "init": "config",
        "overrides": overrides,
    }


def on_policy_config(
    config: StudentConfig, model: nn.Module, tokenizer: Any
) -> OnPolicyConfig | None:
    """How the distilled student's on-policy batches are made (None when they are off)."""
    if config.on_policy_fraction == 0:
        return None
    return OnPolicyConfig(
        fraction=config.on_policy_fraction,
        divergence=on_policy_divergence(config),  # type: ignore[arg-type]
        jsd_beta=config.jsd_beta,
        temperature=config.temperature,
        sample_temperature=config.on_policy_temperature,
        max_new_tokens=config.on_policy_max_new_tokens,
        prompt_tokens=config.on_policy_prompt_tokens,
        pad_id=tokenizer.pad_token_id,
        eos_ids=eos_token_ids(model, tokenizer),
    )


def _train_one(
    name: str,
    alpha: float,
    config: StudentConfig,
    ctx: RunContext,
    initial: nn.Module,
    built: dict[str, Any],
    teacher: nn.Module,
    tokenizer: Any,
    sequences: dict[str, list[list[int]]],
    cache: tuple[list[Any], ...] | None,
    out: Path,
    on_policy: OnPolicyConfig | None = None,
) -> dict[str, Any]:
    model = copy.deepcopy(initial)  # the distilled student and its twin start alike
    sampler = None if on_policy is None else OnPolicyDistillation(on_policy, teacher)
    freeze(model, config.freeze_embeddings, config.freeze_layers, table="student")
    online = alpha > 0 and cache is None
    layout = "sampled" if config.teacher_outputs == "sampled" else "top-k"
    work_dir = ctx.checkpoint_dir(out, "baseline" if alpha == 0 else "distilled")
    training_run = TrainingRun(
        stage=f"student ({name})",
        model=model,
        tokenizer=tokenizer,
        config=config,
        train_set=as_dataset(sequences["train"], cache if alpha > 0 else None, layout),
        eval_set=as_dataset(sequences["validation"]),
        work_dir=work_dir,
        log_dir=out / "tensorboard",
        seed=ctx.seed,
    )
    trainer, history = train_causal(
        training_run,
        temperature=config.temperature,
        alpha=alpha,
        divergence=config.divergence,
        jsd_beta=config.jsd_beta,
        teacher=teacher if online else None,
        on_policy=sampler,
    )
    save_trained_model(trainer, tokenizer, out / "model")
    metrics: dict[str, Any] = {
        "built": built,
        "alpha": alpha,
        "parameters": parameter_counts(model),
        "teacher_outputs": None if alpha == 0 else ("online" if online else layout),
    }
    if sampler is not None:
        metrics["on_policy"] = sampler.summary(trainer.args.device)
    for split in ("validation", "test"):
        metrics[split] = perplexity(
            model, sequences[split], tokenizer.pad_token_id, desc=f"student: {split} perplexity"
        )
    metrics.update(finish_training(trainer, history, out, work_dir))
    return metrics


def run(
    ctx: RunContext, inputs: dict[str, Path], out: Path, *, data: DataConfig, student: StudentTable
) -> dict[str, Any]:
    teacher_dir = inputs["teacher"] / "model"
    tokenizer = prepare_tokenizer(load_tokenizer(str(teacher_dir), "teacher model"))
    teacher = load_causal_lm(teacher_dir, "teacher model").eval()
    splits = {name: read_split(inputs["data"], name) for name in ("train", "validation", "test")}
    sequences = {
        name: encode_texts(tokenizer, split, data.max_length) for name, split in splits.items()
    }
    cache = None
    if student.teacher_outputs == "top-k" and student.alpha > 0:
        cache = load_top_k(
            inputs["labels"] / "topk" / "train.npz", splits["train"].ids, sequences["train"]
        )
    elif student.teacher_outputs == "sampled" and student.alpha > 0:
        cache = load_sampled(
            inputs["labels"] / "sampled" / "train.npz", splits["train"].ids, sequences["train"]
        )
    calibration = None
    if calibrates(student):
        calibration = calibration_sample(sequences["train"], student.calibration_texts, ctx.seed)
    initial, built = build_student(student, teacher, tokenizer, ctx, calibration)
    before = {
        split: perplexity(
            initial,
            sequences[split],
            tokenizer.pad_token_id,
            desc=f"student before training: {split} perplexity",
        )
        for split in ("validation", "test")
    }
    common = dict(
        config=student,
        ctx=ctx,
        initial=initial,
        built=built,
        teacher=teacher,
        tokenizer=tokenizer,
        sequences=sequences,
    )
    on_policy = on_policy_config(student, initial, tokenizer)
    metrics = _train_one(
        "distilled", student.alpha, cache=cache, out=out, on_policy=on_policy, **common
    )
    metrics.update(
        divergence=student.divergence,
        temperature=student.temperature,
        top_k=student.top_k if student.teacher_outputs == "top-k" else None,
        before_training=before,
    )
    if student.teacher_outputs == "sampled":
        metrics["samples_per_token"] = student.samples_per_token
    if "no-kd" in student.twins:
        (out / "baseline").mkdir()
        metrics["baseline"] = _train_one(
            "no-KD baseline", 0.0, cache=None, out=out / "baseline", **common
        )
    return metrics
