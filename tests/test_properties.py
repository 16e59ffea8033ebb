"""Property-based tests of the data loaders: any settings give either data of the promised shape or
one ConfigError naming the key, never a traceback from deep inside."""

import string

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_pl import ConfigError, SineDataModule, TextDataModule
from lstm_pl.text import StreamWindows

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FAST
@given(length=st.integers(1, 400), window=st.integers(1, 400), batch=st.integers(1, 64),
       sampling=st.sampled_from(["with_replacement", "original", "epochs"]))
def test_sine_data_or_one_clear_error(length, window, batch, sampling):
    try:
        data = SineDataModule(length=length, window=window, batch_size=batch, sampling=sampling)
        data.setup("fit")
    except ConfigError as error:
        assert "data.init_args." in str(error)
        return
    n = length - window
    assert window < length and len(data.train_set) + len(data.val_set) == n
    x, y = next(iter(data.train_dataloader()))
    assert x.shape[1:] == (window, 1) and y.shape[1:] == (1,) and 1 <= len(x) <= batch
    rows = data.train_set.tensors[0]  # every window drawn is one of the training windows
    assert all(any(torch.equal(row, candidate) for candidate in rows) for row in x)


@FAST
@given(ids=st.lists(st.integers(0, 50), min_size=0, max_size=300), batch=st.integers(1, 20), seq=st.integers(1, 30))
def test_stream_windows_cover_the_streams_once(ids, batch, seq):
    windows = StreamWindows(np.array(ids, dtype=np.int64), batch, seq)
    per_stream = len(ids) // batch
    seen = [x for x, _ in (windows[k] for k in range(len(windows)))]
    if per_stream < 2:
        assert len(windows) == 0
        return
    streams = torch.tensor(ids[: batch * per_stream]).view(batch, per_stream)
    assert torch.equal(torch.cat(seen, dim=1), streams[:, :-1])  # each input token once, in order
    for k in range(len(windows)):
        x, y = windows[k]
        assert torch.equal(y[:, :-1], x[:, 1:])  # targets: the inputs shifted by one


words = st.text(alphabet=string.ascii_letters + string.punctuation + " \n\t'-éß中😀", min_size=0, max_size=60)


@FAST
@given(lines=st.lists(words, min_size=0, max_size=40), batch=st.integers(1, 8), seq=st.integers(1, 12),
       min_count=st.integers(1, 3))
def test_text_data_or_one_clear_error(tmp_path_factory, lines, batch, seq, min_count):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    data = TextDataModule(path=str(path), batch_size=batch, seq_len=seq, min_count=min_count)
    try:
        data.setup("fit")
    except ConfigError as error:
        assert str(error).startswith("data.init_args.")
        return
    assert data.vocab_size >= 1
    for split in ("train", "val", "test"):
        for x, y in data.windows(split):
            assert x.shape == y.shape and x.shape[0] == batch and int(x.max()) < data.vocab_size


def test_one_word_corpus_is_one_clear_error(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("word")
    with pytest.raises(ConfigError, match="data.init_args.batch_size"):
        TextDataModule(path=str(path), batch_size=1, seq_len=5, min_count=1).setup("fit")
