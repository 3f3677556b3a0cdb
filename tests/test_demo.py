"""Tests for `linneuron demo`: every number it prints, recomputed here with torch or a closed form, and the command."""

from __future__ import annotations

import io
import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from linneuron import demo
from linneuron.cli import main
from linneuron.demo.datasets import city_profit, exam_scores

SEED = demo.DEFAULT_SEED


@pytest.fixture(scope="module")
def regression() -> demo.Regression:
    return demo.linear_regression()


@pytest.fixture(scope="module")
def perceptron() -> demo.Perceptron:
    return demo.perceptron()


@pytest.fixture(scope="module")
def logistic() -> demo.Logistic:
    return demo.logistic_regression()


def _all_passed(result) -> None:
    failed = [check for check in result.checks if not check.passed]
    assert not failed, failed


# ---- section 1 ------------------------------------------------------------------------------------------------


def test_one_neuron_against_torch():
    r = demo.one_neuron()
    x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    w = torch.tensor([0.5, 0.25, 0.75], dtype=torch.float64)
    total = x @ w
    np.testing.assert_array_equal(r.inputs, x.numpy())
    np.testing.assert_array_equal(r.weighted_sum, total.numpy())
    np.testing.assert_array_equal(r.fires_threshold, (total >= 1.0).double().numpy())
    np.testing.assert_array_equal(r.z, (total - 1.0).numpy())
    np.testing.assert_array_equal(r.fires_bias, (total >= 1.0).double().numpy())
    np.testing.assert_array_equal(r.fires_bias_input, (total >= 1.0).double().numpy())
    assert r.bias == -r.theta == -1.0
    # The default example includes a sum exactly at the threshold, where the step fires (H(0) = 1).
    at_threshold = (total == 1.0).numpy()
    assert at_threshold.any() and (r.fires_bias[at_threshold] == 1).all()
    _all_passed(r)


def test_one_neuron_other_weights_match_heaviside():
    weights, theta = (0.3, -0.7, 1.1), 0.35
    r = demo.one_neuron(weights, theta)
    x = torch.tensor(r.inputs)
    z = x @ torch.tensor(weights, dtype=torch.float64) - theta
    np.testing.assert_array_equal(r.fires_bias, torch.heaviside(z, torch.tensor(1.0, dtype=torch.float64)).numpy())
    np.testing.assert_allclose(r.z, z.numpy(), rtol=0, atol=1e-15)
    _all_passed(r)


def test_one_neuron_rejects_wrong_weight_count():
    with pytest.raises(ValueError, match="three numbers"):
        demo.one_neuron((1.0, 2.0))


# ---- section 2 ------------------------------------------------------------------------------------------------


def test_tensor_form_equals_torch_mv_and_targets():
    r = demo.tensor_form()
    x = torch.tensor([[1, 0, 0], [1, 0, 1], [1, 1, 0]], dtype=torch.float32)
    w = torch.tensor([-0.1, 0.2, 0.2])
    expected = torch.mv(x, w)
    assert torch.equal(torch.from_numpy(r.zhat), expected)
    assert torch.equal(torch.from_numpy(r.zhat), torch.tensor([-0.1, 0.1, 0.1]))
    assert torch.equal(torch.from_numpy(r.zhat_bias_form), expected)
    assert r.zhat.dtype == np.float32
    _all_passed(r)


# ---- section 3 ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [SEED, 0, 12345])
def test_layer_form_equals_nn_linear_under_the_same_seed(seed):
    r = demo.layer_form(seed)
    torch.manual_seed(seed)
    reference = torch.nn.Linear(2, 1)
    x = torch.tensor([[0, 0], [0, 1], [1, 0]], dtype=torch.float32)
    assert torch.equal(torch.from_numpy(r.weight), reference.weight.detach())
    assert torch.equal(torch.from_numpy(r.bias), reference.bias.detach())
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(r.zhat), reference(x))
    _all_passed(r)


# ---- section 4 ------------------------------------------------------------------------------------------------


def test_regression_closed_form(regression):
    data = city_profit()
    slope, intercept = np.polyfit(data.population, data.profit, 1)
    mse = np.mean((slope * data.population + intercept - data.profit) ** 2)
    assert regression.slope_exact == pytest.approx(slope, rel=1e-10)
    assert regression.intercept_exact == pytest.approx(intercept, rel=1e-10)
    assert regression.mse_exact == pytest.approx(mse, rel=1e-10)
    # Gradient descent (float32) reaches the least-squares line.
    assert regression.slope == pytest.approx(slope, rel=1e-4)
    assert regression.intercept == pytest.approx(intercept, rel=1e-4)
    assert regression.mse == pytest.approx(mse, rel=1e-5)
    assert [p[0] for p in regression.predictions] == [35_000, 70_000]
    for people, by_network, by_formula in regression.predictions:
        assert by_formula == pytest.approx((slope * people / 1e4 + intercept) * 1e4, rel=1e-9)
        assert by_network == pytest.approx(by_formula, abs=1.0)  # within a dollar
    assert regression.mean == pytest.approx(data.population.mean())
    assert regression.std == pytest.approx(data.population.std())
    np.testing.assert_array_equal(regression.population, data.population)


def test_regression_loss_history_matches_plain_torch(regression):
    data = city_profit()
    x = torch.tensor((data.population - data.population.mean()) / data.population.std(), dtype=torch.float32)
    y = torch.tensor(data.profit, dtype=torch.float32).unsqueeze(1)
    torch.manual_seed(SEED)
    layer = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=regression.lr)
    losses = []
    for _ in range(regression.epochs):
        loss = F.mse_loss(layer(x.unsqueeze(1)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    np.testing.assert_allclose(regression.losses, losses, rtol=1e-5)
    np.testing.assert_allclose(regression.losses_torch, losses, rtol=1e-5)
    # A convex quadratic with a step below 1/L: the loss never goes up.
    assert np.all(np.diff(regression.losses) <= 1e-6 * regression.losses[:-1])
    _all_passed(regression)


def test_regression_line_does_not_depend_on_the_seed(regression):
    other = demo.linear_regression(seed=1)
    assert other.losses[0] != regression.losses[0]  # another starting line
    assert other.slope == pytest.approx(regression.slope_exact, rel=1e-4)
    assert other.intercept == pytest.approx(regression.intercept_exact, rel=1e-4)
    _all_passed(other)


# ---- section 5 ------------------------------------------------------------------------------------------------


def _perceptron_in_torch(truth, seed, lr, max_epochs):
    """The classic online perceptron rule, written with torch only, from nn.Linear's initial weights."""
    torch.manual_seed(seed)
    init = torch.nn.Linear(2, 1)
    w = init.weight.detach().clone()
    b = init.bias.detach().clone()
    x = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=torch.float32)
    mistakes_per_epoch = []
    for _ in range(max_epochs):
        mistakes = 0
        for i in range(4):
            y = 1.0 if float(x[i] @ w[0] + b[0]) >= 0 else 0.0
            error = truth[i] - y
            w[0] += lr * error * x[i]
            b[0] += lr * error
            mistakes += int(error != 0)
        mistakes_per_epoch.append(mistakes)
        if mistakes == 0:
            break
    return init, w[0], b[0], mistakes_per_epoch


def test_perceptron_matches_the_rule_in_torch(perceptron):
    assert [g.name for g in perceptron.gates] == ["AND", "OR", "XOR"]
    for gate in perceptron.gates:
        init, w, b, mistakes = _perceptron_in_torch(gate.targets.tolist(), SEED, perceptron.lr, 25)
        np.testing.assert_array_equal(gate.initial_weight, init.weight.detach()[0].numpy())
        assert gate.initial_bias == init.bias.item()
        assert list(gate.mistakes_per_epoch) == mistakes
        np.testing.assert_allclose(gate.weight, w.numpy(), rtol=0, atol=1e-6)
        assert gate.bias == pytest.approx(b.item(), abs=1e-6)
        assert gate.threshold == -gate.bias
        x = torch.tensor(perceptron.inputs, dtype=torch.float64)
        z = x @ torch.tensor(gate.weight, dtype=torch.float64) + gate.bias
        np.testing.assert_array_equal(gate.predictions, (z >= 0).double().numpy())
    _all_passed(perceptron)


def test_perceptron_learns_and_or_but_not_xor(perceptron):
    and_gate, or_gate, xor_gate = perceptron.gates
    for gate in (and_gate, or_gate):
        assert gate.converged and gate.mistakes_per_epoch[-1] == 0
        np.testing.assert_array_equal(gate.predictions, gate.targets)
    assert not xor_gate.converged
    assert min(xor_gate.mistakes_per_epoch) >= 1  # not linearly separable: some sample is always wrong
    assert np.any(xor_gate.predictions != xor_gate.targets)


@pytest.mark.parametrize("seed", [0, 1])
def test_perceptron_other_seeds(seed):
    r = demo.perceptron(seed)
    for gate in r.gates:
        _, w, b, mistakes = _perceptron_in_torch(gate.targets.tolist(), seed, r.lr, 25)
        assert list(gate.mistakes_per_epoch) == mistakes
        np.testing.assert_allclose(gate.weight, w.numpy(), rtol=0, atol=1e-6)
    assert [g.converged for g in r.gates] == [True, True, False]
    _all_passed(r)


def test_two_layer_xor(perceptron):
    net = perceptron.xor_network
    x = torch.tensor(perceptron.inputs, dtype=torch.float64)
    hidden = (x @ torch.tensor(net.hidden_weight, dtype=torch.float64).T + torch.tensor(net.hidden_bias) >= 0).double()
    output = hidden @ torch.tensor(net.output_weight, dtype=torch.float64).T + torch.tensor(net.output_bias) >= 0
    np.testing.assert_array_equal(net.hidden, hidden.numpy())
    np.testing.assert_array_equal(net.output, output.double()[:, 0].numpy())
    np.testing.assert_array_equal(net.output, [0, 1, 1, 0])
    np.testing.assert_array_equal(net.hidden[:, 0], [0, 1, 1, 1])  # OR
    np.testing.assert_array_equal(net.hidden[:, 1], [1, 1, 1, 0])  # NAND


# ---- section 6 ------------------------------------------------------------------------------------------------


def test_logistic_matches_plain_torch(logistic):
    data = exam_scores()
    mean, std = data.scores.mean(axis=0), data.scores.std(axis=0)
    x = torch.tensor((data.scores - mean) / std, dtype=torch.float32)
    t = torch.tensor(data.admitted, dtype=torch.float32).unsqueeze(1)
    torch.manual_seed(SEED)
    layer = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=logistic.lr)
    losses = []
    for _ in range(logistic.epochs):
        loss = F.binary_cross_entropy_with_logits(layer(x), t)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    np.testing.assert_allclose(logistic.losses, losses, rtol=1e-5)
    # The printed line is in the scores' own units: it must give the same z as the trained layer.
    with torch.no_grad():
        z_layer = layer(x)[:, 0].double().numpy()
    z_printed = data.scores @ logistic.weight + logistic.bias
    np.testing.assert_allclose(z_printed, z_layer, rtol=0, atol=1e-4)
    assert logistic.accuracy == pytest.approx(np.mean((z_layer >= 0) == (data.admitted == 1)))
    p = 1 / (1 + math.exp(-(45 * logistic.weight[0] + 85 * logistic.weight[1] + logistic.bias)))
    assert logistic.example == (45.0, 85.0)
    assert logistic.example_probability == pytest.approx(p, abs=1e-5)
    assert np.all(np.diff(logistic.losses) <= 0)
    with torch.no_grad():
        assert logistic.loss == pytest.approx(F.binary_cross_entropy_with_logits(layer(x), t).item(), rel=1e-5)
    _all_passed(logistic)


def test_logistic_minimum_matches_torch_lbfgs(logistic):
    # An independent optimiser for the best cross-entropy: torch's L-BFGS in float64 on the raw scores.
    data = exam_scores()
    x = torch.tensor(data.scores, dtype=torch.float64)
    t = torch.tensor(data.admitted, dtype=torch.float64).unsqueeze(1)
    layer = torch.nn.Linear(2, 1, dtype=torch.float64)
    torch.nn.init.zeros_(layer.weight)
    torch.nn.init.zeros_(layer.bias)
    optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15,
                                  history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(layer(x), t)
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        best = F.binary_cross_entropy_with_logits(layer(x), t).item()
    assert logistic.loss_best == pytest.approx(best, abs=1e-8)
    assert logistic.loss >= logistic.loss_best - 1e-6  # gradient descent cannot beat the minimum
    assert logistic.loss == pytest.approx(logistic.loss_best, abs=1e-4)


# ---- checks, progress bar, data -------------------------------------------------------------------------------


def test_sections_leave_the_global_random_state_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    demo.layer_form(seed=1)
    demo.perceptron(max_epochs=2)
    assert torch.equal(torch.rand(3), expected)


def test_checks_can_fail():
    assert demo.Check("x", 0.0).passed
    assert not demo.Check("x", 1e-9).passed
    assert demo.Check("x", 1e-9, 1e-8).passed
    assert not demo.Check("x", float("nan"), 1.0).passed
    assert demo._max_abs_diff([1.0, 2.0], [1.0]) == math.inf
    assert math.isnan(demo._max_abs_diff([float("nan")], [1.0]))
    assert demo._max_abs_diff([float("nan")], [float("nan")]) == 0.0


def test_failing_check_makes_the_command_fail(monkeypatch, capsys):
    real = demo.tensor_form

    def broken():
        result = real()
        wrong = result.zhat + 1
        check = demo._check("zhat == torch.mv", wrong, result.zhat_torch_mv)
        return demo.TensorForm(
            result.x, result.w, result.z, wrong, result.zhat_torch_mv, result.zhat_bias_form, (check,)
        )

    monkeypatch.setattr(demo.neuron, "tensor_form", broken)  # where the section table looks it up
    assert main(["demo", "--no-plot", "--section", "2"]) == 1
    out = capsys.readouterr().out
    assert "0 of 1 checks" in out and "FAILED: zhat == torch.mv" in out


def test_progress_bar_is_tqdm_and_draws_when_asked():
    tqdm = pytest.importorskip("tqdm")
    stream = io.StringIO()
    with demo.ProgressBar(10_000, "train", stream=stream, enabled=True) as bar:
        assert isinstance(bar, tqdm.tqdm)
        for i in range(10_000):
            bar.update(i + 1, "loss 1.0")
        assert bar.n == 10_000
    text = stream.getvalue()
    assert text.endswith("\n")
    assert text.count("\r") < 200  # tqdm redraws at most every 0.1 s, not once per epoch
    final = text.rstrip("\n").split("\r")[-1]
    assert final.startswith("train: 100%") and "10000/10000" in final and "loss 1.0" in final


def test_progress_bar_silent_off_terminal():
    stream = io.StringIO()  # not a tty
    with demo.ProgressBar(5, "train", stream=stream) as bar:
        bar.update(5)
    assert stream.getvalue() == ""
    with pytest.raises(ValueError, match="total"):
        demo.ProgressBar(0, "train")


def test_training_shows_progress_when_asked(capsys):
    demo.perceptron(progress=True)
    err = capsys.readouterr().err
    assert "5. perceptron AND" in err and "converged" in err and "100%" in err


def test_datasets_are_deterministic_and_plausible():
    a, b = city_profit(), city_profit()
    np.testing.assert_array_equal(a.population, b.population)
    np.testing.assert_array_equal(a.profit, b.profit)
    assert a.population.shape == a.profit.shape == (97,)
    assert 5.0 <= a.population.min() and a.population.max() <= 22.5
    slope, _ = np.polyfit(a.population, a.profit, 1)
    assert abs(slope - 1.2) < 0.15  # the generating slope, up to noise
    assert not np.array_equal(city_profit(seed=1).profit, a.profit)
    e, f = exam_scores(), exam_scores()
    np.testing.assert_array_equal(e.scores, f.scores)
    np.testing.assert_array_equal(e.admitted, f.admitted)
    assert e.scores.shape == (100, 2) and set(np.unique(e.admitted)) == {0.0, 1.0}
    assert ((e.scores >= 30) & (e.scores < 100)).all()
    with pytest.raises(ValueError, match="at least 2"):
        city_profit(n=1)
    with pytest.raises(ValueError, match="at least 2"):
        exam_scores(n=0)


# ---- the command ----------------------------------------------------------------------------------------------


def _subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = "0"
    return env


@pytest.mark.slow
def test_command_end_to_end_is_deterministic(capsys):
    assert main(["demo", "--no-plot"]) == 0
    in_process = capsys.readouterr()
    assert "picture:" not in in_process.out
    assert "matplotlib" not in in_process.err  # --no-plot: no complaint either way
    for number in range(1, 7):
        assert f"== {number}. " in in_process.out
    assert "checks against torch or closed form passed" in in_process.out
    assert "FAILED" not in in_process.out
    # A fresh process prints exactly the same thing: the demo is deterministic.
    completed = subprocess.run(
        [sys.executable, "-m", "linneuron.cli", "demo", "--no-plot"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_subprocess_env(),
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == in_process.out


@pytest.mark.slow
def test_command_draws_pictures(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "pictures"
    assert main(["demo", "--out", str(out_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    names = sorted(p.name for p in out_dir.iterdir())
    assert names == ["logistic.png", "perceptron.png", "regression.png", "step.png"]
    for name in names:
        data = (out_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 2000
        assert f"picture: {out_dir / name}" in out
    # The same picture drawn again is the same file, byte for byte.
    again = demo.run_demo([1], out_dir=tmp_path / "again", stdout=io.StringIO())[2]
    assert again[0].read_bytes() == (out_dir / "step.png").read_bytes()


def test_missing_matplotlib_is_explained(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` raise ImportError
    out, err = io.StringIO(), io.StringIO()
    results, checks, pictures = demo.run_demo([1, 2], out_dir=tmp_path / "p", stdout=out, stderr=err)
    assert pictures == [] and not (tmp_path / "p").exists()
    assert "matplotlib is not installed" in err.getvalue() and "--no-plot" in err.getvalue()
    assert all(check.passed for check in checks) and sorted(results) == [1, 2]
    quiet = io.StringIO()
    demo.run_demo([2], out_dir=None, stdout=io.StringIO(), stderr=quiet)
    assert quiet.getvalue() == ""


def test_section_selection_and_bad_section(capsys):
    assert main(["demo", "--no-plot", "--section", "2", "3"]) == 0
    out = capsys.readouterr().out
    assert "== 2. " in out and "== 3. " in out and "== 1. " not in out and "== 4. " not in out
    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--section", "7"])
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="no section"):
        demo.run_demo([9], out_dir=None, stdout=io.StringIO())


def test_module_import_is_light():
    code = "import sys, linneuron.demo; print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=_subprocess_env(), check=True
    )
    assert completed.stdout.split() == ["False", "False"]
