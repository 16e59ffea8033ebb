"""The data and splits are the original's, value for value and index for index."""

import numpy as np
import pytest
import torch

from lstm_pl import AddingDataModule, ConfigError, SineDataModule, adding_problem, noisy_sine, train_test_split_indices
from lstm_pl.data import sliding_windows

# scikit-learn 1.x: train_test_split(np.arange(226), test_size=0.1, random_state=1), computed once.
SKLEARN_TEST_226 = [39, 167, 93, 62, 196, 188, 38, 122, 105, 89, 4, 161, 218, 95, 99, 107, 31, 106, 67, 127, 165, 34, 163]
SKLEARN_TRAIN_226_HEAD = [169, 44, 152, 189, 219, 18, 162, 148, 132, 108]
SKLEARN_TEST_10000_HEAD = [9953, 3850, 4962, 3886, 5437, 8517, 2041, 1989, 1933, 9984]
SKLEARN_TRAIN_10000_HEAD = [3376, 1114, 1332, 1812, 7714, 5356, 8876, 9056, 9113, 2617]


def test_split_matches_scikit_learn():
    train, test = train_test_split_indices(226, 0.1, 1)
    assert (len(train), len(test)) == (203, 23)
    assert test.tolist() == SKLEARN_TEST_226
    assert train[:10].tolist() == SKLEARN_TRAIN_226_HEAD
    assert sorted(train.tolist() + test.tolist()) == list(range(226))
    train, test = train_test_split_indices(10_000, 0.1, 1)
    assert (len(train), len(test)) == (9000, 1000)
    assert test[:10].tolist() == SKLEARN_TEST_10000_HEAD
    assert train[:10].tolist() == SKLEARN_TRAIN_10000_HEAD
    train, test = train_test_split_indices(10_000, 1000, 1)  # an int is a count, as in scikit-learn
    assert test[:10].tolist() == SKLEARN_TEST_10000_HEAD and len(test) == 1000 and len(train) == 9000


def original_toy_problem():
    """The original's generator (MLPreProcess.generate_sin_with_noize), written as it was."""
    t, T = np.arange(2.5 * 100 + 1), 100
    np.random.seed(seed=12)
    noize = 0.05 * np.random.uniform(low=-1.0, high=1.0, size=len(t))
    sin = np.sin(2.0 * np.pi * (t / T))
    return sin + noize


def test_sine_data_is_the_originals():
    noisy, clean = noisy_sine()
    np.testing.assert_array_equal(noisy, original_toy_problem())
    np.testing.assert_allclose(noisy[:3], [-0.03458372, 0.08679549, 0.10166474], atol=1e-8)
    assert noisy[-1] == 0.030549204028609667  # the original's last value, to the bit
    np.testing.assert_allclose(clean, np.sin(2 * np.pi * np.arange(251) / 100), rtol=0, atol=1e-14)
    # 2π·(t/T), the original's order, not 2πt/T: the two differ in the last bits of 83 clean values
    assert (clean != np.sin(2 * np.pi * np.arange(251) / 100)).sum() == 83
    # The original's windows: data[i:i+25] -> data[i+25], i = 0 .. 225.
    f = original_toy_problem()
    x, y = sliding_windows(noisy, 25)
    assert x.shape == (226, 25, 1) and y.shape == (226, 1)
    for i in (0, 100, 225):
        np.testing.assert_array_equal(x[i, :, 0], f[i : i + 25])
        assert y[i, 0] == f[i + 25]


def test_sine_datamodule_split_and_sampling():
    data = SineDataModule(batch_size=10, sampling_seed=3)
    data.setup("fit")
    assert data.train_idx.tolist()[:10] == SKLEARN_TRAIN_226_HEAD and data.val_idx.tolist() == SKLEARN_TEST_226
    x0, y0 = data.train_set[0]
    assert torch.equal(x0[:, 0], torch.tensor(data.x[169, :, 0], dtype=torch.float32))
    stream = iter(data.train_dataloader())  # endless: the budget is trainer.max_steps
    batches = [next(stream) for _ in range(600)]
    assert batches[0][0].shape == (10, 25, 1)
    again = iter(data.train_dataloader())
    assert all(torch.equal(b[0], next(again)[0]) for b in batches[:5])  # the draws are seeded
    # with replacement, the original's numpy-free equivalent: each index uniform over the 203 training windows
    drawn = torch.cat([torch.randint(203, (10,), generator=torch.Generator().manual_seed(3))])
    assert torch.equal(batches[0][1], data.train_set.tensors[1][drawn])
    full = SineDataModule(batch_size=10, sampling="epochs")
    full.setup("fit")
    assert sum(len(x) for x, _ in full.train_dataloader()) == 203  # ordinary epochs: one pass


def original_adding_problem(T, N):
    """The original's generator, loop for loop."""
    np.random.seed(12)
    signals = np.random.uniform(low=0.0, high=1.0, size=(N, T))
    masks = np.zeros((N, T))
    for i in range(N):
        positions = np.random.permutation(np.arange(T))[:2]
        masks[i][positions] = 1
    data = np.zeros((N, T, 2))
    data[:, :, 0] = signals
    data[:, :, 1] = masks
    target = (signals * masks).sum(axis=1).reshape(N, 1)
    return data, target


def test_adding_problem_is_the_originals():
    x, y = adding_problem(250, 300, 12)
    x_ref, y_ref = original_adding_problem(250, 300)
    np.testing.assert_array_equal(x, x_ref)
    np.testing.assert_array_equal(y, y_ref)
    assert x.shape == (300, 250, 2) and y.shape == (300, 1)
    assert (x[:, :, 1].sum(axis=1) == 2).all()
    np.testing.assert_allclose(y[:, 0], (x[:, :, 0] * x[:, :, 1]).sum(axis=1))


def test_adding_datamodule_reuses_the_split():
    data = AddingDataModule(t=20, n_sequence=10_000)
    data.setup("fit")
    assert data.val_idx[:10].tolist() == SKLEARN_TEST_10000_HEAD
    assert len(data.train_set) == 9000 and len(data.val_set) == 1000
    assert data.train_set[0][0].shape == (20, 2)


def test_held_out_test_set_is_a_fresh_draw():
    """test_seed: test scores a new draw of the data, disjoint from what fit sees; without it,
    the validation split (the original had no third split)."""
    held_out = AddingDataModule(t=20, n_sequence=500, test_seed=1000)
    held_out.setup("fit")
    x, y = adding_problem(20, 500, seed=1000)
    test_x, test_y = held_out.test_set.tensors
    assert test_x.shape == (500, 20, 2)
    np.testing.assert_allclose(test_y.numpy(), y.astype(np.float32))
    np.testing.assert_allclose(test_x.numpy(), x.astype(np.float32))
    train_x = held_out.train_set.tensors[0]
    assert not any(torch.equal(train_x[i], test_x[0]) for i in range(len(train_x)))
    plain = AddingDataModule(t=20, n_sequence=500)
    plain.setup("fit")
    assert plain.test_set is plain.val_set
    assert torch.equal(plain.train_set.tensors[0], train_x)  # the held-out draw changes nothing else


def test_validation_and_test_sizes_are_counts_where_given():
    """adding_solve.yaml's split: 19,000 drawn, 10,000 of them for validation, and a held-out
    draw of its own size (test_sequences), the same sequences a 10,000-sequence data set's
    test_seed draws."""
    data = AddingDataModule(t=20, n_sequence=1900, val_size=1000, test_seed=1000, test_sequences=500)
    data.setup("fit")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (900, 1000, 500)
    x, y = adding_problem(20, 500, seed=1000)
    np.testing.assert_allclose(data.test_set.tensors[0].numpy(), x.astype(np.float32))
    with pytest.raises(ConfigError, match="val_size"):
        AddingDataModule(t=20, n_sequence=100, val_size=100).setup("fit")


def test_sine_waveform_is_the_training_series_with_a_test_draw():
    data = SineDataModule(test_seed=1000)
    data.setup("fit")
    noisy, clean = noisy_sine(251, 100, 0.05, seed=12)
    np.testing.assert_array_equal(data.waveform.noisy, noisy)
    np.testing.assert_array_equal(data.waveform.clean, clean)
    assert len(data.test_set) == 226 and not torch.equal(data.test_set.tensors[0], data.val_set.tensors[0])


@pytest.mark.parametrize("override, key", [
    ("--data.init_args.window=300", "data.init_args.window"),
    ("--data.init_args.window=0", "data.init_args.window"),
    ("--data.init_args.length=-1", "data.init_args.length"),
    ("--data.init_args.batch_size=0", "data.init_args.batch_size"),
    ("--data.init_args.val_size=1.5", "data.init_args.val_size"),
])
def test_sine_bad_config_names_the_key(override, key, config_path, capsys):
    from lstm_pl.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", config_path("sine"), override])
    errors = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(errors) == 1 and key in errors[0], errors


def test_adding_bad_config_names_the_key():
    with pytest.raises(ConfigError, match="data.init_args.t "):
        AddingDataModule(t=1)
    with pytest.raises(ConfigError, match="data.init_args.n_sequence"):
        AddingDataModule(n_sequence=1)


def test_original_sampling_continues_the_numpy_stream():
    """sampling: original replays the original's loop: numpy.random.seed, the data generation,
    then numpy.random.choice(len(X_train), size=batch_size) every step, indexing X_train in
    train_test_split's order."""
    data = SineDataModule(batch_size=10, sampling="original")
    data.setup("fit")
    stream = iter(data.train_dataloader())
    batches = [next(stream) for _ in range(3)]
    np.random.seed(12)
    np.random.uniform(low=-1.0, high=1.0, size=251)  # the generation's draws
    for x, y in batches:
        chosen = np.random.choice(203, size=10)
        assert torch.equal(x, data.train_set.tensors[0][chosen]) and torch.equal(y, data.train_set.tensors[1][chosen])
    adding = AddingDataModule(t=20, n_sequence=300, batch_size=7, sampling="original")
    adding.setup("fit")
    first = next(iter(adding.train_dataloader()))
    original_adding_problem(20, 300)  # leaves numpy's global stream where the original's loop starts
    assert torch.equal(first[1], adding.train_set.tensors[1][np.random.choice(270, size=7)])


@pytest.mark.parametrize("devices, refused", [(1, False), (2, True)])
def test_the_batch_check_counts_every_process_on_the_machine(devices, refused):
    """Under DDP every process of a machine draws its share of the global batch at once: the rows
    of all of them must fit in its free memory, and every process checks it alike (in setup, so
    that none waits at a barrier for one that stopped)."""
    from types import SimpleNamespace

    from lstm_pl.data import memory_available

    free = memory_available()
    if free is None:
        pytest.skip("no /proc/meminfo: the check needs Linux's MemAvailable")
    share = int(0.75 * free) // (20 * 2 * 4 + 4)  # rows of 20 steps x (signal, mask) and a target, float32
    data = AddingDataModule(t=20, n_sequence=200, batch_size=2 * share)
    data.trainer = SimpleNamespace(global_rank=0, world_size=2, num_devices=devices, state=SimpleNamespace(fn="fit"))
    if refused:
        with pytest.raises(ConfigError, match=rf"data.init_args.batch_size \({2 * share}\): one batch's rows need"):
            data.setup("fit")
    else:
        data.setup("fit")
