"""Training and tasks: seeded determinism, fixed splits, a smoke run of every task."""

from __future__ import annotations

import pytest
import torch

from hwprune.errors import ConfigError
from hwprune.tasks import make_count_sequences, make_sbm_graph, load_task, register_task, task_names
from hwprune.train import evaluate, train, train_task


def test_tasks_are_fixed_and_well_formed():
    assert task_names() == ["digits_cnn", "gcn", "lenet300100", "tiny_transformer"]
    assert load_task("mlp").name == "lenet300100"  # former names still load
    a, b = load_task("digits_cnn"), load_task("digits_cnn")
    assert torch.equal(a.test.inputs[0], b.test.inputs[0])
    assert a.train.inputs[0].shape[1:] == (1, 8, 8)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    # standardised on the training split
    assert a.train.inputs[0].mean().abs() < 1e-4
    tokens, labels = make_count_sequences(500, seed=3)
    assert torch.equal(labels, ((tokens == 3).sum(1) > (tokens == 5).sum(1)).long())
    assert 0.2 < labels.float().mean() < 0.8
    x, adj, y = make_sbm_graph(nodes=64, communities=4, seed=1)
    assert adj.shape == (64, 64) and torch.allclose(adj, adj.T) and set(y.tolist()) == {0, 1, 2, 3}
    g = load_task("gcn")
    assert set(g.train.index.tolist()).isdisjoint(g.test.index.tolist())
    with pytest.raises(ConfigError, match="unknown task 'cifar'"):
        load_task("cifar")
    with pytest.raises(ConfigError, match="already registered"):
        register_task("lenet300100", lambda seed: None)


def test_training_is_deterministic_and_restores_global_state():
    task = load_task("lenet300100")
    threads = torch.get_num_threads()
    m1, h1 = train_task(task, seed=7, epochs=1)
    m2, h2 = train_task(task, seed=7, epochs=1)
    m3, _ = train_task(task, seed=8, epochs=1)
    for (k, v1), v2, v3 in zip(m1.state_dict().items(), m2.state_dict().values(), m3.state_dict().values()):
        assert torch.equal(v1, v2), k
    assert any(not torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m3.state_dict().values()))
    assert h1.loss == h2.loss
    assert torch.get_num_threads() == threads
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.parametrize("name,epochs,floor", [("digits_cnn", 2, 0.85), ("lenet300100", 3, 0.85),
                                               ("transformer", 1, 0.6), ("gcn", 40, 0.6)])
def test_every_task_learns(name, epochs, floor):
    task = load_task(name)
    model, history = train_task(task, epochs=epochs)
    assert len(history.loss) == epochs
    assert epochs == 1 or history.loss[-1] < history.loss[0]
    assert evaluate(model, task, "test") >= floor


def test_bad_training_arguments():
    task = load_task("lenet300100")
    model = task.make_model()
    with pytest.raises(ConfigError, match="epochs"):
        train(model, task, epochs=-1)
    with pytest.raises(ConfigError, match="learning rate"):
        train(model, task, epochs=1, lr=0)
    with pytest.raises(ConfigError, match="split"):
        evaluate(model, task, "dev")
