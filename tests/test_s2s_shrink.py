"""Students cut from a tiny T5 / BART teacher (distill/tasks/seq2seq/shrink.py): the same
logits as the teacher with every layer, as a reference built by deleting layers otherwise,
T5's relative bias kept, saved and loaded, generating with a KV cache, and the errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForSeq2SeqLM,
    BartConfig,
    BartForConditionalGeneration,
    BertConfig,
    EncoderDecoderConfig,
    EncoderDecoderModel,
    MarianConfig,
    MBartConfig,
    MT5Config,
    PegasusConfig,
    T5Config,
    T5ForConditionalGeneration,
)

from distill.errors import ModelLoadError
from distill.tasks.seq2seq.shrink import even_layers, layer_counts, shrink_seq2seq
from tests.seq2seq_models import build_tiny_bart, build_tiny_t5

WORDS = "the cat dog sat ran on a mat log big small red blue".split()


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, nn.Module]:
    root = tmp_path_factory.mktemp("shrink")
    return {
        "t5": AutoModelForSeq2SeqLM.from_pretrained(build_tiny_t5(root / "t5", WORDS, layers=4)),
        "bart": AutoModelForSeq2SeqLM.from_pretrained(
            build_tiny_bart(root / "bart", WORDS, layers=4, seed=1)
        ),
    }


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    input_ids = torch.randint(4, 4 + len(WORDS), (2, 7))
    input_ids[:, -1] = 1  # EOS
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, :2] = 0
    labels = torch.randint(4, 4 + len(WORDS), (2, 5))
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**_batch(), use_cache=False).logits


def _stacks(model: nn.Module) -> tuple[nn.Module, str, nn.Module, str]:
    """(encoder stack's parent, attribute, decoder stack's parent, attribute)."""
    if isinstance(model, T5ForConditionalGeneration):
        return model.encoder, "block", model.decoder, "block"
    return model.model.encoder, "layers", model.model.decoder, "layers"


def _reference(teacher: nn.Module, encoder: list[int], decoder: list[int]) -> nn.Module:
    """The teacher with layers deleted from a deep copy, layer_idx renumbered by hand, and
    (T5) the teacher's block-0 relative bias put in the new block 0."""
    model = copy.deepcopy(teacher)
    enc_parent, enc_name, dec_parent, dec_name = _stacks(model)
    for parent, name, keep in ((enc_parent, enc_name, encoder), (dec_parent, dec_name, decoder)):
        old = getattr(parent, name)
        new = nn.ModuleList(old[i] for i in keep)
        for index, layer in enumerate(new):
            for module in layer.modules():
                if hasattr(module, "layer_idx"):
                    module.layer_idx = index
        if name == "block" and keep[0] != 0:
            attention = new[0].layer[0].SelfAttention
            attention.relative_attention_bias = (
                old[0].layer[0].SelfAttention.relative_attention_bias
            )
            attention.has_relative_attention_bias = True
        setattr(parent, name, new)
    return model


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_all_layers_give_the_teachers_logits_and_leave_it_untouched(
    teachers: dict[str, nn.Module], name: str
) -> None:
    teacher = teachers[name]
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = shrink_seq2seq(teacher, decoder_layers=None, encoder_layers=None)
    assert student is not teacher
    assert torch.equal(_logits(student), _logits(teacher))
    assert layer_counts(teacher.config) == layer_counts(student.config) == (4, 4)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    student_weights = {p.data_ptr() for p in student.parameters()}
    assert not student_weights & {p.data_ptr() for p in teacher.parameters()}


@pytest.mark.parametrize(
    ("name", "encoder", "decoder"),
    [
        ("t5", None, [0, 3]),
        ("bart", None, [0, 3]),
        ("t5", [1, 2], [1, 3]),
        ("bart", [2], [1, 3]),
    ],
)
def test_kept_layers_give_the_reference_logits(
    teachers: dict[str, nn.Module], name: str, encoder: list[int] | None, decoder: list[int]
) -> None:
    teacher = teachers[name]
    student = shrink_seq2seq(teacher, decoder_layers=decoder, encoder_layers=encoder)
    encoder_keep = encoder or [0, 1, 2, 3]
    assert layer_counts(student.config) == (len(encoder_keep), len(decoder))
    expected = _logits(_reference(teacher, encoder_keep, decoder))
    got = _logits(student)
    assert got.shape == (2, 5, len(WORDS) + 4)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(got, _logits(teacher), atol=1e-3)
    indices = [m.layer_idx for m in student.get_decoder().modules() if hasattr(m, "layer_idx")]
    assert sorted(set(indices)) == list(range(len(decoder)))


def test_t5_without_layer_0_keeps_the_teachers_relative_bias(
    teachers: dict[str, nn.Module],
) -> None:
    teacher = teachers["t5"]
    student = shrink_seq2seq(teacher, decoder_layers=[1, 3], encoder_layers=[2, 3])
    assert student.config.num_layers == 2 and student.config.num_decoder_layers == 2
    for side in ("encoder", "decoder"):
        theirs = getattr(teacher, side).block[0].layer[0].SelfAttention.relative_attention_bias
        ours = getattr(student, side).block[0].layer[0].SelfAttention.relative_attention_bias
        assert torch.equal(ours.weight, theirs.weight)
        assert ours.weight.data_ptr() != theirs.weight.data_ptr()
        assert (
            not getattr(student, side).block[1].layer[0].SelfAttention.has_relative_attention_bias
        )
    # The teacher's block 3 (student block 1) feed-forward weights moved with it.
    assert torch.equal(
        student.decoder.block[1].layer[2].DenseReluDense.wi.weight,
        teacher.decoder.block[3].layer[2].DenseReluDense.wi.weight,
    )


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_save_and_load_give_the_same_logits_and_tied_embeddings(
    teachers: dict[str, nn.Module], name: str, tmp_path: Path
) -> None:
    student = shrink_seq2seq(teachers[name], decoder_layers=[1, 3], encoder_layers=[0, 2, 3])
    student.save_pretrained(tmp_path)
    loaded = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    assert layer_counts(loaded.config) == (3, 2)
    assert torch.equal(_logits(loaded), _logits(student))
    for model in (student, loaded):
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert student.generation_config.decoder_start_token_id == (0 if name == "t5" else 1)


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_generate_with_the_cache_equals_greedy_without(
    teachers: dict[str, nn.Module], name: str
) -> None:
    student = shrink_seq2seq(teachers[name], decoder_layers=[0, 3], encoder_layers=[1, 3]).eval()
    batch = _batch()
    kwargs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "max_new_tokens": 9,
        "min_new_tokens": 9,
        "do_sample": False,
        "num_beams": 1,
    }
    with torch.no_grad():
        cached = student.generate(**kwargs, use_cache=True)
        uncached = student.generate(**kwargs, use_cache=False)
    assert cached.shape == (2, 10)
    assert torch.equal(cached, uncached)
    # And the same tokens as a hand-rolled greedy loop over full forward passes.
    tokens = cached[:, :1]
    with torch.no_grad():
        for _ in range(9):
            out = student(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                decoder_input_ids=tokens,
                use_cache=False,
            )
            logits = out.logits[:, -1]
            logits[:, student.config.eos_token_id] = -float("inf")  # min_new_tokens
            tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(tokens, cached)


def test_untied_bart_stays_untied_and_keeps_its_dtype() -> None:
    config = BartConfig(
        vocab_size=20, d_model=16, encoder_ffn_dim=32, decoder_ffn_dim=32,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_layers=3,
        decoder_layers=2, max_position_embeddings=32, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    teacher = BartForConditionalGeneration(config).to(torch.bfloat16)
    teacher.model.decoder.layers[1].fc2.float()  # as _keep_in_fp32_modules leave some
    assert teacher.lm_head.weight is not teacher.model.shared.weight
    student = shrink_seq2seq(teacher, decoder_layers=[1], encoder_layers=[0, 2])
    assert student.lm_head.weight is not student.model.shared.weight
    assert torch.equal(student.lm_head.weight, teacher.lm_head.weight)
    assert student.lm_head.weight.dtype == torch.bfloat16
    assert student.model.decoder.layers[0].fc2.weight.dtype == torch.float32
    assert student.model.decoder.layers[0].fc1.weight.dtype == torch.bfloat16
    assert (student.config.encoder_layers, student.config.decoder_layers) == (2, 1)
    assert student.training == teacher.training


def test_t5_v1_1_keeps_its_unscaled_decoder_outputs() -> None:
    # transformers 5 always ties T5's head; tie_word_embeddings=False (T5 v1.1, mT5) turns
    # off the decoder output scaling instead, which the student must keep.
    config = T5Config(
        vocab_size=20, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=3,
        num_decoder_layers=2, relative_attention_num_buckets=4, tie_word_embeddings=False,
        feed_forward_proj="gated-gelu", decoder_start_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    teacher = T5ForConditionalGeneration(config).eval()
    student = shrink_seq2seq(teacher, decoder_layers=None, encoder_layers=None)
    assert student.config.scale_decoder_outputs is False
    batch = {"input_ids": torch.tensor([[5, 6, 7, 1]]), "decoder_input_ids": torch.tensor([[0, 9]])}
    with torch.no_grad():
        assert torch.equal(student(**batch).logits, teacher(**batch).logits)


def _bert2bert() -> EncoderDecoderModel:
    shape = {"vocab_size": 30, "hidden_size": 16, "num_attention_heads": 2}
    encoder = BertConfig(**shape, num_hidden_layers=3, intermediate_size=32)
    decoder = BertConfig(
        **shape, num_hidden_layers=4, intermediate_size=32, is_decoder=True,
        add_cross_attention=True,
    )  # fmt: skip
    config = EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id = 2, 0
    torch.manual_seed(0)
    return EncoderDecoderModel(config).eval()


def test_bert2bert_keeps_the_chosen_layers() -> None:
    teacher = _bert2bert()
    assert layer_counts(teacher.config) == (3, 4)
    student = shrink_seq2seq(teacher, decoder_layers=[0, 3], encoder_layers=[2])
    assert layer_counts(student.config) == (1, 2)
    assert student.config.encoder.num_hidden_layers == 1
    assert len(student.decoder.bert.encoder.layer) == 2
    theirs = teacher.decoder.bert.encoder.layer[3].crossattention.self.query.weight
    assert torch.equal(
        student.decoder.bert.encoder.layer[1].crossattention.self.query.weight, theirs
    )
    assert torch.equal(
        student.encoder.encoder.layer[0].output.dense.weight,
        teacher.encoder.encoder.layer[2].output.dense.weight,
    )
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8]]), "decoder_input_ids": torch.tensor([[2, 9]])}
    with torch.no_grad():
        same = shrink_seq2seq(teacher, decoder_layers=None, encoder_layers=None)
        assert torch.equal(same(**batch).logits, teacher(**batch).logits)


def test_layer_counts_of_every_known_shape() -> None:
    assert layer_counts(T5Config(num_layers=6, num_decoder_layers=2)) == (6, 2)
    assert layer_counts(T5Config(num_layers=5)) == (5, 5)
    assert layer_counts(MT5Config(num_layers=8, num_decoder_layers=3)) == (8, 3)
    assert layer_counts(BartConfig(encoder_layers=12, decoder_layers=3)) == (12, 3)
    assert layer_counts(MarianConfig(encoder_layers=6, decoder_layers=1)) == (6, 1)
    assert layer_counts(MBartConfig(encoder_layers=12, decoder_layers=12)) == (12, 12)
    assert layer_counts(PegasusConfig(encoder_layers=16, decoder_layers=4)) == (16, 4)
    assert layer_counts(_bert2bert().config) == (3, 4)
    with pytest.raises(ModelLoadError, match="BertConfig: cannot tell"):
        layer_counts(BertConfig())


def test_even_layers_keep_the_first_and_the_last() -> None:
    assert even_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert even_layers(12, 3) == [0, 6, 11]
    assert even_layers(12, 2) == [0, 11]
    assert even_layers(12, 4) == [0, 4, 7, 11]
    assert even_layers(6, 3) == [0, 3, 5]
    assert even_layers(4, 4) == [0, 1, 2, 3]
    assert even_layers(12, 1) == [0]
    with pytest.raises(ValueError, match=r"student.num_layers = 7: .* 6 layers"):
        even_layers(6, 7)
    with pytest.raises(ValueError, match="student.num_layers = 0"):
        even_layers(6, 0)


@pytest.mark.parametrize(
    ("decoder", "encoder", "message"),
    [
        ([0, 4], None, r"student.layers = \[0, 4\]: layer 4 is out of range; the teacher has 4"),
        ([-1], None, r"student.layers = \[-1\]: layer -1 is out of range; the teacher has 4"),
        ([1, 1], None, r"student.layers = \[1, 1\]: layer 1 is repeated .* 4 layers"),
        ([3, 1], None, r"student.layers = \[3, 1\]: layer 1 is out of order .* 4 layers"),
        ([], None, r"student.layers = \[\]: keep at least one of the teacher's 4 layers"),
        ([0.5], None, r"student.layers = \[0.5\]: 0.5 is not a layer index"),
        (None, [7], r"student.encoder_layers = \[7\]: layer 7 is out of range; the teacher has 4"),
        (None, [2, 0], r"student.encoder_layers = \[2, 0\]: layer 0 is out of order"),
        (None, [], r"student.encoder_layers = \[\]: keep at least one"),
    ],
)
def test_bad_layer_lists_are_refused(
    teachers: dict[str, nn.Module],
    decoder: list[int] | None,
    encoder: list[int] | None,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        shrink_seq2seq(teachers["bart"], decoder_layers=decoder, encoder_layers=encoder)
    assert isinstance(caught.value, ModelLoadError)
