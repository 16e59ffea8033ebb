"""Property-based tests of the data loaders: any settings give either data of the promised shape or
one ConfigError naming the key, never a traceback from deep inside.

The strategies draw mostly valid settings (so that the shape assertions run) and some invalid ones
(so that the errors are seen too), their branches chosen by ``coin`` (so that the shares hold
whatever examples hypothesis draws). Each ``check_*`` function is run by hypothesis from a plain
test, which then asserts on how its examples ended (``run_and_count``; ``pytest -s`` prints the
counts): a property whose examples all stop at a ConfigError proves nothing. The outcomes are also
labelled with ``event()``. Derandomized, without the example database: every run of the same source
draws the same examples.
"""

import math
import random
import string
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lstm_pl import ConfigError, SineDataModule, TextDataModule
from lstm_pl.corpus import UNKNOWN, split_words, word_tokenizer
from lstm_pl.text import StreamWindows

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None, print_blob=False)

CHECKED = "checked"  # the outcome of an example that reached every shape assertion
OUTCOMES: defaultdict[str, Counter] = defaultdict(Counter)  # test -> how its examples ended
DETAILS: defaultdict[str, Counter] = defaultdict(Counter)  # test -> what its checked examples covered


def outcome(test: str, label: str) -> None:
    """Record how one example of ``test`` ended."""
    event(label)
    OUTCOMES[test][label] += 1


def note(test: str, label: str) -> None:
    """Record what a checked example of ``test`` covered (printed with ``pytest -s``)."""
    event(label)
    DETAILS[test][label] += 1


def run_and_count(test: str, check, *args, min_checked: float = 0.5, also_seen: tuple[str, ...] = (),
                  covered: tuple[str, ...] = ()) -> Counter:
    """Run the hypothesis test ``check``, then assert that at least ``min_checked`` of its examples
    reached the assertions, that every outcome in ``also_seen`` (the errors meant to be drawn)
    occurred at least once, and so did every case in ``covered`` among the checked examples."""
    OUTCOMES[test].clear()
    DETAILS[test].clear()
    check(*args)
    counts = OUTCOMES[test]
    total = sum(counts.values())
    print(f"\n{test}: {dict(counts)} ({counts[CHECKED] / max(total, 1):.0%} checked of {total}); "
          f"checked: {dict(sorted(DETAILS[test].items()))}")
    assert total >= PROPERTY.max_examples // 2, counts
    assert counts[CHECKED] >= min_checked * total, counts
    for label in also_seen:
        assert counts[label] >= 1, (label, counts)
    for label in covered:
        assert DETAILS[test][label] >= 1, (label, DETAILS[test])
    return counts


def coin(p: float, name: str) -> st.SearchStrategy[bool]:
    """True with probability ``p``, about independently from one example to the next: hypothesis's
    own small choices cluster (its first examples are its simplest, the next mutate them), so that a
    1-in-5 branch can come 0 or 30 times in 60 examples, depending on the test's source. ``name``
    salts the seed: hypothesis reuses values drawn earlier in an example, which would otherwise tie
    one coin to another."""
    return st.integers(0, 2**32 - 1).map(lambda seed: random.Random(f"{name}/{seed}").random() < p)


def on_processes(data, rank: int, world: int) -> None:
    """Make ``data`` see itself as process ``rank`` of ``world`` (what a DDP Trainer tells it)."""
    data.trainer = SimpleNamespace(global_rank=rank, world_size=world) if world > 1 else None


# --- The sine wave: SineDataModule -------------------------------------------------------------

SAMPLINGS = ["with_replacement", "original", "epochs"]


@st.composite
def sine_settings(draw):
    """(length, window, batch_size, sampling, processes). The window: 17 in 20 at least 2 shorter
    than the series, else at least as long; ``window = length - 1`` (one window in all, which the
    90/10 split gives to validation) is left out: see test_sine_with_no_training_window_is_one_clear_error.
    Under DDP, 1 in 5 batches cannot be shared among the processes."""
    if draw(coin(0.85, "window")):
        length = draw(st.integers(3, 400))
        window = draw(st.integers(1, length - 1))  # length - 1: one window, the validation's
    else:
        length = draw(st.integers(1, 400))
        window = draw(st.integers(length, length + 400))
    sampling = draw(st.sampled_from(SAMPLINGS))
    n = length - window
    n_train = n - math.ceil(0.1 * n)
    world = draw(st.sampled_from([1, 2, 4]))
    most = 64 // world  # the most samples per process
    if sampling == "epochs" and world > 1 and n > 0:
        # Epochs under DDP with a batch larger than the training set share it among the processes
        # (test_sine_epochs_under_ddp_share_a_partial_batch); here, whole batches.
        most = min(most, n_train // world)
        if most == 0:
            world, most = 1, 64
    batch = world * draw(st.integers(1, most))
    if world > 1 and draw(coin(0.2, "indivisible")):  # 1 in 5: a batch the processes cannot share
        batch += 1
    return length, window, batch, sampling, world


@PROPERTY
@given(case=sine_settings())
def check_sine_data(case):
    length, window, batch, sampling, world = case
    try:
        data = SineDataModule(length=length, window=window, batch_size=batch, sampling=sampling)
        data.setup("fit")
    except ConfigError as error:
        if window < length:  # one window, which the split gives to validation
            assert length - window - math.ceil(0.1 * (length - window)) == 0
            assert str(error).startswith("data.init_args.val_size ")
            outcome("sine", "config_error (no training window)")
            return
        assert str(error).startswith("data.init_args.window ")
        outcome("sine", "config_error (window)")
        return
    assert window < length
    n = length - window
    n_val = math.ceil(0.1 * n)
    n_train = n - n_val
    assert (len(data.train_set), len(data.val_set)) == (n_train, n_val)
    assert sorted(np.concatenate([data.train_idx, data.val_idx]).tolist()) == list(range(n))  # a partition
    X, Y = data.x, data.y  # sliding windows of one series: window i + 1 is window i moved on by one value
    assert X.shape == (n, window, 1) and Y.shape == (n, 1)
    assert np.array_equal(X[1:, :-1, 0], X[:-1, 1:, 0]) and np.array_equal(Y[:-1, 0], X[1:, -1, 0])

    rows, targets = data.train_set.tensors
    if batch % world:
        on_processes(data, 0, world)
        with pytest.raises(ConfigError, match=r"^data\.init_args\.batch_size "):
            data.train_dataloader()
        outcome("sine", "config_error (batch per process)")
        return
    local = batch // world
    expected = min(batch, n_train) if sampling == "epochs" and world == 1 else local
    firsts = []
    for rank in range(world):
        on_processes(data, rank, world)
        x, y = next(iter(data.train_dataloader()))
        assert x.shape == (expected, window, 1) and y.shape == (expected, 1)
        # every (window, target) drawn is one of the training pairs
        same = (x[:, None] == rows[None]).flatten(2).all(-1) & (y[:, None] == targets[None]).flatten(2).all(-1)
        assert bool(same.any(dim=1).all())
        firsts.append((x, y))
    if world > 1:  # the processes' shares of the first batch make the one-process first batch
        on_processes(data, 0, 1)
        x, y = next(iter(data.train_dataloader()))
        assert torch.equal(torch.cat([x for x, _ in firsts]), x) and torch.equal(torch.cat([y for _, y in firsts]), y)
    on_processes(data, 0, 1)
    x, y = next(iter(data.val_dataloader()))
    assert x.shape == (min(max(batch, 256), n_val), window, 1) and y.shape == (len(x), 1)
    note("sine", sampling)
    note("sine", "1 process" if world == 1 else "processes > 1")
    outcome("sine", CHECKED)


def test_sine_data_or_one_clear_error():
    run_and_count("sine", check_sine_data, also_seen=("config_error (window)", "config_error (batch per process)"),
                  covered=(*SAMPLINGS, "1 process", "processes > 1"))


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_sine_with_no_training_window_is_one_clear_error(sampling):
    with pytest.raises(ConfigError, match=r"^data\.init_args\.val_size \(0\.1\) leaves none of the 1 sequences"):
        data = SineDataModule(length=26, window=25, batch_size=4, sampling=sampling)
        data.setup("fit")
        next(iter(data.train_dataloader()))


@pytest.mark.parametrize("windows, world, shares", [(4, 2, [2, 2]), (5, 2, [3, 2]), (7, 3, [3, 2, 2])])
def test_sine_epochs_under_ddp_share_a_partial_batch(windows, world, shares):
    """A batch larger than the training set (8 against ``windows``): every process takes one step
    on its share of the one-process batch, together exactly that batch."""
    length = next(n for n in range(26, 60) if n - 25 - math.ceil(0.1 * (n - 25)) == windows)
    taken = []
    for rank in range(world):
        data = SineDataModule(length=length, window=25, batch_size=12, sampling="epochs")
        data.setup("fit")
        assert len(data.train_set) == windows
        on_processes(data, rank, world)
        batches = [x for x, _ in data.train_dataloader()]
        assert [len(x) for x in batches] == [shares[rank]]
        taken.append(batches[0])
    one = SineDataModule(length=length, window=25, batch_size=12, sampling="epochs")
    one.setup("fit")
    (whole, _), = list(one.train_dataloader())
    assert torch.equal(torch.cat(taken), whole)


# --- Language-model batching: StreamWindows ----------------------------------------------------

@st.composite
def stream_settings(draw):
    world = draw(st.sampled_from([1, 1, 2, 3]))
    local = draw(st.integers(1, 8))
    batch = world * local
    per_stream = draw(st.integers(0, 1) if draw(coin(0.2, "short")) else st.integers(2, 40))  # 4 in 5 >= 2
    extra = draw(st.integers(0, batch - 1))  # the tokens dropped after the last whole stream
    dtype = draw(st.sampled_from([np.int64, np.uint16, np.uint32]))  # the id files hold uint16 or uint32
    ids = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, 60_000, batch * per_stream + extra)
    return ids.astype(dtype), batch, draw(st.integers(1, 30)), draw(st.integers(0, world - 1)), world


@PROPERTY
@given(case=stream_settings())
def check_stream_windows(case):
    ids, batch, seq, rank, world = case
    local = batch // world
    windows = StreamWindows(ids, batch, seq, slice(rank * local, (rank + 1) * local))
    per_stream = len(ids) // batch
    if per_stream < 2:  # no token has a successor in its stream
        assert len(windows) == 0
        with pytest.raises(IndexError):
            windows[0]
        outcome("streams", "per_stream < 2")
        return
    streams = torch.from_numpy(ids[: batch * per_stream].astype(np.int64)).view(batch, per_stream)
    streams = streams[rank * local : (rank + 1) * local]  # this process's rows
    items = [windows[k] for k in range(len(windows))]
    assert len(items) == math.ceil((per_stream - 1) / seq)
    last = per_stream - 1 - seq * (len(items) - 1)
    assert [x.shape for x, _ in items] == [(local, seq)] * (len(items) - 1) + [(local, last)]
    assert all(x.shape == y.shape and x.dtype == y.dtype == torch.long for x, y in items)
    assert torch.equal(torch.cat([x for x, _ in items], dim=1), streams[:, :-1])  # each input token once, in order
    assert torch.equal(torch.cat([y for _, y in items], dim=1), streams[:, 1:])  # targets: the inputs shifted by one
    for k in (len(windows), -1):
        with pytest.raises(IndexError):
            windows[k]
    note("streams", "1 process" if world == 1 else "processes > 1")
    note("streams", "one window" if len(items) == 1 else "several windows")
    outcome("streams", CHECKED)


def test_stream_windows_cover_the_streams_once():
    run_and_count("streams", check_stream_windows, also_seen=("per_stream < 2",),
                  covered=("one window", "several windows", "1 process", "processes > 1"))


# --- A corpus end to end: TextDataModule -------------------------------------------------------

# Words, or anything: punctuation alone (no word, or a word of its own with keep_punctuation), or
# words joined by punctuation (a.b: two words).
token = st.one_of(st.text(alphabet=string.ascii_letters + "'-éß中😀İ", min_size=1, max_size=8),
                  st.text(alphabet=string.ascii_letters + string.punctuation + "éß中😀İ", min_size=1, max_size=8))
SEPARATORS = [" ", " ", " ", "\n", "\t", "  ", "\r\n", " \n\n"]
FRACTIONS = st.sampled_from([0.05, 0.1, 0.2])


@st.composite
def corpora(draw):
    """A text of up to 60 tokens (3 in 20) or of 500 to 1500, between assorted whitespace: tokens
    from a small pool, the first the most frequent (so that ``min_count`` keeps some), or (1 in 4)
    every token a new word (``w0 w1 ...``: ``min_count`` > 1 keeps none)."""
    pool = draw(st.lists(token, min_size=1, max_size=12))
    n = draw(st.integers(0, 60) if draw(coin(0.15, "tiny")) else st.integers(500, 1500))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    if draw(coin(1 / 4, "distinct")):
        chosen = [f"w{i}" for i in range(n)]
    else:
        chosen = rng.choices(pool, weights=[1 / (i + 1) for i in range(len(pool))], k=n)
    return "".join(word + rng.choice(SEPARATORS) for word in chosen)


@st.composite
def stream_counts(draw):
    """(batch_size, eval_batch_size, processes): up to 8 streams each; 1 in 3 under DDP (2
    processes), and there 1 in 3 with one of the two that the processes cannot share."""
    world = 2 if draw(coin(1 / 3, "ddp")) else 1
    batch, eval_batch = (world * draw(st.integers(1, 8 // world)) for _ in range(2))
    if world > 1 and draw(coin(1 / 3, "indivisible")):
        if draw(st.booleans()):
            batch += 1
        else:
            eval_batch += 1
    return batch, eval_batch, world


@PROPERTY
@given(text=corpora(), batching=stream_counts(), seq=st.integers(1, 12), min_count=st.integers(1, 3),
       val_fraction=FRACTIONS, test_fraction=FRACTIONS, lowercase=st.booleans(), keep_punctuation=st.booleans())
def check_text_data(base, text, batching, seq, min_count, val_fraction, test_fraction, lowercase, keep_punctuation):
    batch, eval_batch, world = batching
    folder = Path(tempfile.mkdtemp(dir=base))
    path = folder / "corpus.txt"
    path.write_text(text, encoding="utf-8", newline="")
    words = split_words(word_tokenizer(keep_punctuation, lowercase), text)
    n = len(words)
    val_end = n - round(test_fraction * n)
    train_end = val_end - round(val_fraction * n)
    sizes = dict(train=train_end, val=val_end - train_end, test=n - val_end)
    streams = dict(train=batch, val=eval_batch, test=eval_batch)
    keys = dict(train="batch_size", val="eval_batch_size", test="eval_batch_size")
    too_small = [split for split in sizes if sizes[split] < 2 * streams[split]]
    data = TextDataModule(path=str(path), cache_dir=str(folder / "cache"), batch_size=batch, seq_len=seq,
                          min_count=min_count, val_fraction=val_fraction, test_fraction=test_fraction,
                          eval_batch_size=eval_batch, lowercase=lowercase, keep_punctuation=keep_punctuation)
    try:
        data.setup("fit")
    except ConfigError as error:
        assert too_small and str(error).startswith(f"data.init_args.{keys[too_small[0]]} "), (str(error), sizes)
        outcome("text", "config_error (corpus too small)")
        return
    assert not too_small, sizes

    # The vocabulary: <unk> = 0, then every training word seen min_count times, most frequent first.
    vocab = data.tokenizer.get_vocab()
    assert vocab[UNKNOWN] == 0 and sorted(vocab.values()) == list(range(len(vocab))) == list(range(data.vocab_size))
    seen = Counter(words[:train_end])
    assert set(vocab) - {UNKNOWN} == {word for word, count in seen.items() if count >= min_count}
    by_id = sorted(set(vocab) - {UNKNOWN}, key=vocab.get)
    assert all(seen[a] >= seen[b] for a, b in zip(by_id, by_id[1:]))
    # The ids: every word's, split by position.
    assert {split: len(ids) for split, ids in data.splits.items()} == sizes
    assert np.concatenate(list(data.splits.values())).tolist() == [vocab.get(word, 0) for word in words]

    # The batches each process reads: training in batch_size streams, validation and test in eval_batch_size.
    for split in ("train", "val", "test"):
        if streams[split] % world:
            on_processes(data, 0, world)
            with pytest.raises(ConfigError, match=rf"^data\.init_args\.{keys[split]} "):
                getattr(data, f"{split}_dataloader")()
            outcome("text", "config_error (streams per process)")
            return
        local = streams[split] // world
        per_stream = sizes[split] // streams[split]
        ids = torch.from_numpy(np.asarray(data.splits[split][: streams[split] * per_stream]).astype(np.int64))
        for rank in range(world):
            on_processes(data, rank, world)
            rows = ids.view(streams[split], per_stream)[rank * local : (rank + 1) * local]
            batches = list(getattr(data, f"{split}_dataloader")())
            assert len(batches) == math.ceil((per_stream - 1) / seq) >= 1
            assert all(x.shape == y.shape and x.shape[0] == local and 1 <= x.shape[1] <= seq for x, y in batches)
            assert all(0 <= int(x.min()) and int(x.max()) < data.vocab_size for x, _ in batches)
            assert torch.equal(torch.cat([x for x, _ in batches], dim=1), rows[:, :-1])
            assert torch.equal(torch.cat([y for _, y in batches], dim=1), rows[:, 1:])  # targets: inputs shifted by one
    note("text", "1 process" if world == 1 else "processes > 1")
    note("text", "vocabulary: <unk> only" if data.vocab_size == 1 else "vocabulary: <unk> and words")
    outcome("text", CHECKED)


def test_text_data_or_one_clear_error(tmp_path):
    run_and_count("text", check_text_data, tmp_path,
                  also_seen=("config_error (corpus too small)", "config_error (streams per process)"),
                  covered=("1 process", "processes > 1", "vocabulary: <unk> only", "vocabulary: <unk> and words"))


def test_one_word_corpus_is_one_clear_error(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("word")
    with pytest.raises(ConfigError, match=r"^data\.init_args\.batch_size \(1\) is too large for the train split"):
        TextDataModule(path=str(path), cache_dir=str(tmp_path / "cache"), batch_size=1, seq_len=5,
                       min_count=1).setup("fit")
