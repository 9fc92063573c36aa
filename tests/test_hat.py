"""HAT (seqzoo/models/hat.py): byte-exact word splitting, causality across words, incremental == teacher-forced."""

from __future__ import annotations

import pytest
import torch

from seqzoo.core.errors import SeqzooError
from seqzoo.models.hat import END_OF_WORD, HAT, WordBatches, split_words, words_to_tensor

TEXT = "In the beginning God created the heaven and the earth.\n  Ünïcödé wörds — and a veryveryverylongwordthatmustbecut ok"


def test_split_merge_round_trip_is_byte_exact_and_respects_utf8():
    data = TEXT.encode()
    words = split_words(data, max_word_len=8)
    assert b"".join(words) == data
    assert all(0 < len(w) <= 8 for w in words)
    for w in words:
        w.decode("utf-8")  # no word starts or ends inside a character
    assert split_words(b"a  b\n", 16) == [b"a  ", b"b\n"]
    with pytest.raises(SeqzooError, match="max_word_len"):
        split_words(data, 2)


def _model(mixer="attention"):
    torch.manual_seed(0)
    return HAT(d_byte=32, d_word=48, encoder_layers=1, backbone_layers=2, decoder_layers=1, n_heads=4,
               backbone_mixer=mixer, max_word_len=12).double().eval()


def _batch(text=TEXT, max_word_len=12):
    words, lengths = words_to_tensor(split_words(text.encode(), max_word_len), max_word_len)
    return words[None], lengths[None]


@pytest.mark.parametrize("mixer", ["attention", "deltanet"])
def test_perturbing_word_j_changes_no_probability_before_it(mixer):
    model = _model(mixer)
    words, lengths = _batch()
    j = 5
    base = model(words, lengths)
    changed = words.clone()
    last = int(lengths[0, j]) - 1
    changed[0, j, last] = (changed[0, j, last] + 1) % 256
    out = model(changed, lengths)
    torch.testing.assert_close(out[0, :j], base[0, :j], rtol=0, atol=0)
    torch.testing.assert_close(out[0, j, :last], base[0, j, :last], rtol=0, atol=0)
    assert not torch.allclose(out[0, j + 1:], base[0, j + 1:]), "later words must see word j"


def test_incremental_scoring_equals_teacher_forcing():
    model = _model()
    text = TEXT[:60]
    words, lengths = _batch(text)
    forced = model(words, lengths)[0]
    flat = torch.cat([forced[j, : int(n) + 1] for j, n in enumerate(lengths[0])])
    torch.testing.assert_close(model.score_incremental(text.encode()), flat, rtol=1e-6, atol=1e-6)


def test_end_of_word_is_a_target_and_padding_scores_zero():
    model = _model()
    words, lengths = _batch()
    logp = model(words, lengths)
    n = int(lengths[0, 0])
    assert (logp[0, 0, : n + 1] < 0).all() and (logp[0, 0, n + 1:] == 0).all()
    assert END_OF_WORD == 257


def test_generation_produces_words_and_training_reduces_loss():
    torch.manual_seed(0)
    model = HAT(d_byte=32, d_word=32, encoder_layers=1, backbone_layers=1, decoder_layers=1, n_heads=2,
                max_word_len=12)
    data = WordBatches(("the cat sat on the mat. " * 200).encode(), n_words=8, max_word_len=12)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for step in range(60):
        loss = model.loss(data.get_batch("train", step, 8))
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    out = model.eval().generate(b"the cat sat on ", 3)
    assert out == b"the mat. the ", out


def test_bad_shapes_are_one_line_errors():
    model = _model()
    with pytest.raises(SeqzooError, match="HAT expects word bytes"):
        model(torch.zeros(1, 3, 5, dtype=torch.int64), torch.ones(1, 3, dtype=torch.int64))
    with pytest.raises(SeqzooError, match="word 0 has 20 bytes"):
        words_to_tensor([b"x" * 20], 12)


def test_perturb_is_seeded_and_changes_letters_only_in_chosen_words():
    from seqzoo.repro.hat import perturb

    text = b"And God said, Let there be light: and there was light. " * 4
    noisy = perturb(text, 0.5, seed=1)
    assert noisy == perturb(text, 0.5, seed=1) and noisy != text
    assert perturb(text, 0.0, seed=1) == text


def test_hat_repro_quick_mode_reports_both_models():
    from seqzoo.repro.base import get_repro

    result = get_repro("hat").run(True)
    assert {"hat", "bytes"} <= set(result.details) and len(result.checks) == 1
