"""The Shakespeare data: normalisation, a train-only vocabulary, position splits, language-model
batches, and a download that keeps nothing unless its checksum matches."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer

from lstm_pl import ConfigError, TextDataModule
from lstm_pl.corpus import UNKNOWN, fit_vocabulary, prepare_corpus, split_words, word_tokenizer
from lstm_pl.files import download
from lstm_pl.text import StreamWindows, variable_lengths

LINE = "First Citizen:\nWe know't, we know't!  O'er the well-beloved--hill; 'tis DONE."


def test_normalisation_is_the_recipes():
    words = split_words(word_tokenizer(), LINE)
    assert words == ["first", "citizen", "we", "know't", "we", "know't", "o'er", "the", "well-beloved--hill", "'tis", "done"]
    kept = split_words(word_tokenizer(keep_punctuation=True), LINE)
    assert kept[:5] == ["first", "citizen", ":", "we", "know't"]
    assert kept[-4:] == [";", "'tis", "done", "."] and "!" in kept and "," in kept


def corpus(tmp_path, train_words, held_out_words, name="corpus.txt"):
    """A text whose 90/5/5 split puts ``train_words`` in training and ``held_out_words`` (an even
    count) half in validation, half in test."""
    assert len(held_out_words) * 9 == len(train_words)
    path = tmp_path / name
    path.write_text(" ".join(train_words) + "\n" + " ".join(held_out_words) + "\n")
    return path


def test_vocabulary_min_count_unknown_and_train_only(tmp_path):
    filler = [f"w{i}" for i in range(349)]  # each seen once
    train = ["alpha"] * 6 + ["beta"] * 5 + filler  # 360 words
    held_out = ["zeta", "Alpha"] * 20  # 40 words: zeta is frequent, but only outside training
    path = corpus(tmp_path, train, held_out)
    data = TextDataModule(path=str(path), min_count=6, batch_size=2, seq_len=5)
    data.setup("fit")
    vocab = data.tokenizer.get_vocab()
    assert vocab[UNKNOWN] == 0 and vocab["alpha"] == 1  # <unk> first, then by frequency
    assert "beta" not in vocab and "zeta" not in vocab and "w0" not in vocab
    assert data.vocab_size == 2
    assert data.tokenizer.encode("Alpha beta zeta unheard-of").ids == [1, 0, 0, 0]
    assert [len(s) for s in data.splits.values()] == [360, 20, 20]
    assert set(data.splits["val"].tolist()) == {0, 1}  # zeta -> <unk> although it occurs 40 times

    looser = TextDataModule(path=str(path), min_count=5, batch_size=2, seq_len=5)
    looser.setup("fit")
    assert "beta" in looser.tokenizer.get_vocab() and looser.vocab_size == 3
    everything = TextDataModule(path=str(path), min_count=1, batch_size=2, seq_len=5)
    everything.setup("fit")
    assert everything.vocab_size == 1 + 2 + 349 and "zeta" not in everything.tokenizer.get_vocab()


def test_windows_are_shifted_contiguous_streams():
    ids = np.arange(103)
    windows = StreamWindows(ids, batch_size=4, seq_len=5)
    # 4 streams of 25 tokens (the last 3 tokens dropped); 24 targets per stream -> windows of 5,5,5,5,4
    assert len(windows) == 5
    xs, ys = zip(*(windows[k] for k in range(len(windows))))
    assert [x.shape for x in xs] == [(4, 5)] * 4 + [(4, 4)] and all(x.shape == y.shape for x, y in zip(xs, ys))
    assert xs[0].dtype == torch.long
    x, y = torch.cat(xs, dim=1), torch.cat(ys, dim=1)
    streams = torch.arange(100).view(4, 25)
    assert torch.equal(x, streams[:, :-1]) and torch.equal(y, streams[:, 1:])  # y = x shifted by one
    assert torch.equal(xs[1][:, 0], ys[0][:, -1])  # row b of window k+1 continues row b of window k
    assert torch.equal(y[:, -1], torch.tensor([24, 49, 74, 99]))  # no wrap-around into the next stream
    with pytest.raises(IndexError):
        windows[5]


def test_variable_windows_are_awd_lstms_and_tile_the_streams():
    """AWD-LSTM's lengths: at least 5, about N(35, 5) 95% of the time and N(17.5, 5) otherwise,
    covering the stream; the same for a seed and epoch, others for another epoch; the windows of
    those lengths tile the streams with nothing left out or read twice."""
    draw = lambda epoch: variable_lengths(35, 20_000, np.random.default_rng([0, epoch]))
    lengths = draw(0)
    assert lengths.min() >= 5 and 20_000 <= lengths.sum() < 20_000 + lengths[-1]
    assert 0.90 < np.mean(np.abs(lengths - 35) < 15) < 0.99 and 33 < lengths.mean() < 35.5
    assert np.array_equal(draw(0), lengths) and not np.array_equal(draw(1)[:50], lengths[:50])
    ids = np.arange(4 * 1000)
    windows = StreamWindows(ids, batch_size=4, seq_len=35, lengths=variable_lengths(35, 999, np.random.default_rng(3)))
    xs, ys = zip(*(windows[k] for k in range(len(windows))))
    streams = torch.arange(4000).view(4, 1000)
    assert torch.equal(torch.cat(xs, dim=1), streams[:, :-1]) and torch.equal(torch.cat(ys, dim=1), streams[:, 1:])
    assert len({x.shape[1] for x in xs}) > 5


def test_variable_windows_scale_the_learning_rate_per_step(tmp_path, corpus_args, monkeypatch):
    """lr_window (linked from variable_windows): each step's SGD rate is lr · T / seq_len for its
    window of T words, the configured rate back in place after it; and without reloading the
    loaders each epoch the windows could not change: one line."""
    from lstm_pl.cli import main

    steps = []
    original = torch.optim.SGD.step

    def step(self, closure=None):
        loss = original(self, closure)
        steps.append(self.param_groups[0]["lr"])
        return loss

    monkeypatch.setattr(torch.optim.SGD, "step", step)
    lengths = []
    monkeypatch.setattr("lstm_pl.tasks.LanguageModelTask.on_train_batch_end",
                        lambda task, outputs, batch, batch_idx: lengths.append((batch[0].shape[1], task.optimizers().param_groups[0]["lr"])))
    args = ["fit", "--config", "configs/shakespeare_best.yaml", *corpus_args, "--data.init_args.variable_windows=true",
            "--model.init_args.net.hidden_size=8", "--model.init_args.net.embedding_size=8", "--trainer.max_steps=40",
            f"--trainer.logger.init_args.save_dir={tmp_path}"]
    with pytest.raises(SystemExit) as error:
        main(args)
    assert error.value.code != 0
    assert not list(tmp_path.rglob("config.yaml"))  # refused before the run wrote anything
    main([*args, "--trainer.reload_dataloaders_every_n_epochs=1"])
    assert len(steps) == len(lengths) == 40 and len({t for t, _ in lengths}) > 5
    assert all(taken == pytest.approx(20 * t / 35) and after == 20 for taken, (t, after) in zip(steps, lengths))


def test_shakespeare_splits_do_not_overlap(shakespeare):
    data = TextDataModule(path=str(shakespeare), batch_size=100, seq_len=50)
    data.setup("fit")
    words = split_words(data.tokenizer, shakespeare.read_text())
    ids = np.array(data.tokenizer.encode(words, is_pretokenized=True).ids)
    train, val, test = (data.splits[s] for s in ("train", "val", "test"))
    assert len(words) == 203_127 and (len(train), len(val), len(test)) == (182_815, 10_156, 10_156)
    assert data.vocab_size == 2_610  # the words seen more than 5 times in training, and <unk>
    np.testing.assert_array_equal(np.concatenate([train, val, test]), ids)  # consecutive, disjoint ranges
    # each split's batches read its own positions only: stream b of val is val[b·n : (b+1)·n]
    for split, start in (("train", 0), ("val", len(train)), ("test", len(train) + len(val))):
        streams = data.windows(split).streams
        np.testing.assert_array_equal(streams.reshape(-1), ids[start : start + streams.size])
    x, y = next(iter(data.val_dataloader()))  # evaluation: 10 streams of 1,015 words, whatever the training batch
    assert x.shape == (10, 50) and torch.equal(x[0], torch.as_tensor(val[:50].astype(np.int64)))
    assert torch.equal(x[1], torch.as_tensor(val[1_015:1_065].astype(np.int64)))
    assert len(data.val_dataloader()) == 21 and len(data.test_dataloader()) == 21  # ceil((1015 - 1) / 50)
    assert next(iter(data.train_dataloader()))[0].shape == (100, 50)
    assert len(data.train_dataloader()) == 37  # ceil((1828 - 1) / 50) windows per epoch


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_is_verified_and_atomic(tmp_path):
    payload = b"to be or not to be\n" * 50
    source = tmp_path / "remote" / "input.txt"
    source.parent.mkdir()
    source.write_bytes(payload)
    cache = tmp_path / "cache"

    with pytest.raises(ConfigError, match="data.init_args.sha256"):
        download(source.as_uri(), sha256(b"something else"), cache / "input.txt")
    assert list(cache.iterdir()) == []  # neither the file nor a partial one
    with pytest.raises(ConfigError, match="data.init_args.url"):
        download((tmp_path / "missing.txt").as_uri(), sha256(payload), cache / "input.txt")
    assert list(cache.iterdir()) == []

    data = TextDataModule(path=None, url=source.as_uri(), sha256=sha256(payload), cache_dir=str(cache),
                          min_count=1, batch_size=2, eval_batch_size=2, seq_len=5)
    data.prepare_data()
    assert [p.name for p in cache.iterdir()] == ["input.txt"] and (cache / "input.txt").read_bytes() == payload
    source.unlink()  # downloaded once: the next run reads the cache
    data.prepare_data()
    data.setup("fit")
    assert data.source == cache / "input.txt" and data.tokenizer.encode("to be").ids == data.tokenizer.encode("TO BE").ids

    wrong = TextDataModule(path=None, url=(tmp_path / "x.txt").as_uri(), sha256=sha256(b"x"), cache_dir=str(cache / "2"))
    (tmp_path / "x.txt").write_bytes(b"y")
    with pytest.raises(ConfigError, match="data.init_args.sha256"):
        wrong.prepare_data()
    assert not (cache / "2" / "x.txt").exists()


def test_local_file_is_preferred_and_checked(tmp_path):
    local = tmp_path / "local.txt"
    local.write_text("a b " * 200)
    data = TextDataModule(path=str(local), url="file:///nowhere/input.txt", sha256=sha256(local.read_bytes()),
                          cache_dir=str(tmp_path / "cache"), min_count=1, batch_size=2, seq_len=5)
    data.prepare_data()  # the file is there: nothing to download
    data.setup("fit")
    assert data.source == local and not (tmp_path / "cache" / "input.txt").exists()  # nothing downloaded
    prepared = list((tmp_path / "cache" / "prepared").iterdir())  # tokenised once, beside the other data
    assert [p.name[:22] for p in prepared] == [f"local-{sha256(local.read_bytes())[:16]}"]
    bad = TextDataModule(path=str(local), url="file:///nowhere/input.txt", sha256="0" * 64, min_count=1, batch_size=2)
    with pytest.raises(ConfigError, match="data.init_args.sha256"):
        bad.setup("fit")


@pytest.mark.parametrize("override, key", [
    ("--data.init_args.url=null --data.init_args.path=no/such/file.txt", "data.init_args.path"),
    ("--data.init_args.sha256=abc", "data.init_args.sha256"),
    ("--data.init_args.batch_size=0", "data.init_args.batch_size"),
    ("--data.init_args.seq_len=0", "data.init_args.seq_len"),
    ("--data.init_args.min_count=0", "data.init_args.min_count"),
    ("--data.init_args.val_fraction=0.0", "data.init_args.val_fraction"),
])
def test_bad_config_names_the_key(override, key, capsys):
    from lstm_pl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(Path(__file__).parents[1] / "configs" / "shakespeare.yaml"), *override.split()])
    errors = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(errors) == 1 and key in errors[0], errors


def test_batch_too_large_for_a_split(tmp_path):
    path = str(corpus(tmp_path, ["a"] * 360, ["b"] * 40))  # 360 training words, 20 each for val and test
    with pytest.raises(ConfigError, match=r"data.init_args.batch_size \(200\) is too large for the train split"):
        TextDataModule(path=path, min_count=1, batch_size=200).setup("fit")
    with pytest.raises(ConfigError, match=r"data.init_args.eval_batch_size \(11\) is too large for the val split"):
        TextDataModule(path=path, min_count=1, batch_size=15, eval_batch_size=11).setup("fit")
    TextDataModule(path=path, min_count=1, batch_size=15, eval_batch_size=10).setup("fit")  # the training batch is free


def test_chunked_preparation_is_the_whole_text_one(tmp_path):
    """Tokenised in 64-byte chunks (long lines cut at spaces, the split's end inside a line), the
    ids and the vocabulary are those of the whole text at once."""
    rng = np.random.default_rng(0)
    words = [f"w{k}" for k in rng.zipf(1.5, size=3_000) % 200]
    lines = [" ".join(words[i : i + n]) for i, n in zip(range(0, 3_000, 97), [97] * 31)]
    source = tmp_path / "corpus.txt"
    source.write_text("\n".join(lines[:5]) + "\n" + " ".join(lines[5:]) + "\n", encoding="utf-8")  # one long line
    tokenizer = word_tokenizer()
    prepare_corpus(source, tokenizer, 2, 0.05, 0.05, tmp_path / "prepared", chunk_size=64)
    meta = json.loads((tmp_path / "prepared" / "meta.json").read_text())
    reference = word_tokenizer()
    all_words = split_words(reference, source.read_text())
    assert meta["words"] == len(all_words) == 3_000 and meta["train_end"] == 2_700
    fit_vocabulary(reference, [all_words[: meta["train_end"]]], 2)
    assert tokenizer.get_vocab() == reference.get_vocab()
    ids = np.memmap(tmp_path / "prepared" / "ids.bin", dtype=meta["dtype"], mode="r")
    np.testing.assert_array_equal(ids[: meta["words"]], reference.encode(all_words, is_pretokenized=True).ids)


def test_prepared_once_reused_and_never_half_written(tmp_path, monkeypatch):
    path = corpus(tmp_path, ["a", "b"] * 180, ["a", "c"] * 20)
    first = TextDataModule(path=str(path), cache_dir=str(tmp_path / "cache"), min_count=1, batch_size=4)
    first.setup("fit")
    (folder,) = (tmp_path / "cache" / "prepared").iterdir()
    stamp = (folder / "ids.bin").stat().st_mtime_ns
    again = TextDataModule(path=str(path), cache_dir=str(tmp_path / "cache"), min_count=1, batch_size=4)
    monkeypatch.setattr("lstm_pl.text.prepare_corpus", lambda *a, **k: pytest.fail("prepared twice"))
    again.setup("fit")
    assert (folder / "ids.bin").stat().st_mtime_ns == stamp and again.vocab_size == first.vocab_size
    monkeypatch.setattr("lstm_pl.text.sha256_of", lambda p: pytest.fail("hashed although unchanged"))
    TextDataModule(path=str(path), cache_dir=str(tmp_path / "cache"), min_count=1, batch_size=4).setup("fit")
    monkeypatch.undo()
    path.write_text(path.read_text() + "d d\n")  # another text: prepared anew, beside the first
    broken = TextDataModule(path=str(path), cache_dir=str(tmp_path / "cache"), min_count=1, batch_size=4)
    monkeypatch.setattr(Tokenizer, "save", lambda self, p, pretty=True: (_ for _ in ()).throw(OSError(28, "No space")))
    with pytest.raises(ConfigError, match=r"data.init_args.cache_dir: cannot write the prepared corpus .*No space"):
        broken.setup("fit")
    assert list((tmp_path / "cache" / "prepared").iterdir()) == [folder]  # nothing half-written left


def prepared_folder(tmp_path: Path) -> tuple[Path, Path]:
    """A text prepared once in ``tmp_path/cache``: (the text, its prepared folder)."""
    path = corpus(tmp_path, ["a", "b", "c", "d"] * 180, ["a", "c"] * 40)
    TextDataModule(path=str(path), cache_dir=str(tmp_path / "cache"), min_count=1, batch_size=4).setup("fit")
    (folder,) = (tmp_path / "cache" / "prepared").iterdir()
    return path, folder


def scramble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0:2], data[-2:] = data[-2:], data[0:2]  # the same size, two ids swapped
    path.write_bytes(bytes(data))


def halve_the_training_split(path: Path) -> None:
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "train_end": meta["train_end"] // 10}))


@pytest.mark.parametrize("name, damage", [
    pytest.param("ids.bin", scramble, id="ids scrambled at the same size"),
    pytest.param("ids.bin", lambda p: p.write_bytes(p.read_bytes()[:-6]), id="ids truncated"),
    pytest.param("ids.bin", Path.unlink, id="ids missing"),
    pytest.param("meta.json", halve_the_training_split, id="meta.json edited"),
    pytest.param("meta.json", lambda p: p.write_text("{not json"), id="meta.json not JSON"),
    pytest.param("meta.json", lambda p: p.write_text(p.read_text().replace('"uint16"', '"uint32"')), id="dtype changed"),
    pytest.param("tokenizer.json", lambda p: p.write_text(p.read_text()[:100]), id="tokenizer.json truncated"),
])
def test_a_damaged_cache_is_prepared_again(name, damage, tmp_path):
    """Any damage to the prepared corpus is found on reuse (its record's checksum, the files' sizes
    and checksums) and the corpus is prepared again, with a warning: the same files as the first
    time, the whole training split."""
    path, folder = prepared_folder(tmp_path)
    good = {file: (folder / file).read_bytes() for file in ("ids.bin", "tokenizer.json", "meta.json")}
    damage(folder / name)
    assert not (folder / name).exists() or (folder / name).read_bytes() != good[name]
    again = TextDataModule(path=str(path), cache_dir=str(tmp_path / "cache"), min_count=1, batch_size=4)
    with pytest.warns(UserWarning, match=f"prepared corpus {folder} is damaged"):
        again.setup("fit")
    assert {file: (folder / file).read_bytes() for file in ("ids.bin", "tokenizer.json")} == \
        {file: good[file] for file in ("ids.bin", "tokenizer.json")}
    assert len(again.splits["train"]) == json.loads(good["meta.json"])["train_end"]
    assert list(folder.parent.iterdir()) == [folder]


def test_partials_of_dead_processes_are_removed(tmp_path):
    """What a killed preparation or checkpoint write left (its process gone) is removed at the next
    start; what a live process is writing is left alone."""
    from lstm_pl.files import remove_stale_partials

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = [tmp_path / f"play-0123-abcd.partial-{pid}", tmp_path / f".last.ckpt.{pid}.x1y2z3.partial"]
    left[0].mkdir()
    left[1].write_bytes(b"")
    live = tmp_path / f".last.ckpt.{os.getppid()}.a1b2c3.partial"
    live.write_bytes(b"")
    assert sorted(remove_stale_partials(tmp_path)) == sorted(left)
    assert list(tmp_path.iterdir()) == [live]


def test_line_breaks_are_words_and_generation_writes_them_as_lines():
    """``line_breaks``: each line break a word of its own (a blank line, the speaker turn, two), in
    every normalisation; decoded text has its lines back."""
    from lstm_pl.corpus import NEWLINE, as_text

    play = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak."
    plain = split_words(word_tokenizer(line_breaks=True), play)
    assert plain[:5] == ["first", "citizen", NEWLINE, "before", "we"] and plain.count(NEWLINE) == 4
    assert plain[plain.index("speak") + 1 : plain.index("speak") + 4] == [NEWLINE, NEWLINE, "all"]
    kept = split_words(word_tokenizer(keep_punctuation=True, lowercase=False, line_breaks=True), play)
    assert kept[:5] == ["First", "Citizen", ":", NEWLINE, "Before"]
    assert NEWLINE not in split_words(word_tokenizer(), play)  # off by default
    assert as_text(" ".join(kept)) == ("First Citizen :\nBefore we proceed any further , hear me speak .\n\nAll :\n"
                                       "Speak , speak .")


def test_a_data_module_with_line_breaks_learns_them_as_words(tmp_path):
    """``data.init_args.line_breaks``: the break is in the vocabulary and the ids, and the prepared
    cache is another folder than the plain one (its ids differ)."""
    from lstm_pl.corpus import NEWLINE

    path = tmp_path / "lines.txt"
    path.write_text("to be or not\nto be\n" * 400)
    plain = TextDataModule(path=str(path), min_count=1, batch_size=2, seq_len=5, cache_dir=str(tmp_path / "cache"))
    lines = TextDataModule(path=str(path), min_count=1, batch_size=2, seq_len=5, cache_dir=str(tmp_path / "cache"),
                           line_breaks=True)
    for data in (plain, lines):
        data.setup("fit")
    assert NEWLINE in lines.tokenizer.get_vocab() and NEWLINE not in plain.tokenizer.get_vocab()
    newline = lines.tokenizer.token_to_id(NEWLINE)
    assert lines.splits["train"][:7].tolist() == [*lines.tokenizer.encode("to be or not").ids, newline,
                                                  *lines.tokenizer.encode("to be").ids, newline][:7]
    assert lines.settings_key != plain.settings_key
