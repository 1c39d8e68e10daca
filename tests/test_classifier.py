"""Tests for synthaug.models.classifier: the CIFAR ResNet18, the trainer and evaluation.

All on CPU with tiny widths and data sets; real training, no mocks.
"""

import dataclasses
import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from synthaug.models.classifier import (PAD, Evaluation, TrainConfig, Trainer, augment_with, draw_augmentation,
                                        evaluate, learning_rate, predict, resnet18)

COLOURS = np.array([[220, 30, 30], [30, 200, 40], [40, 60, 230], [230, 230, 40]], np.uint8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine OpenMP
    threads can stall each other for seconds; one thread keeps the file fast and steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def colour_task(n_per_class: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Four classes of noisy solid colours: trivially separable."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(COLOURS)), n_per_class)
    noise = rng.normal(0, 25, (len(y), size, size, 3))
    x = np.clip(COLOURS[y][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    order = rng.permutation(len(y))
    return x[order], y[order]


def tiny_config(**changes) -> TrainConfig:
    return TrainConfig(**{"epochs": 2, "batch_size": 32, "width": 4, **changes})


def make_trainer(cfg: TrainConfig, seed: int = 0, n_per_class: int = 16) -> Trainer:
    x, y = colour_task(n_per_class, seed=123)
    return Trainer(cfg, x, y, num_classes=4, seed=seed, device="cpu", progress=False)


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------- model


def test_resnet18_is_the_cifar_variant():
    model = resnet18(num_classes=10).eval()
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # the usual 11.17M
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    stem_conv = model.stem[0]
    assert stem_conv.kernel_size == (3, 3) and stem_conv.stride == (1, 1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.stem(x).shape == (2, 64, 32, 32)
        assert model(x).shape == (2, 10)
    stages = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [stage[0].conv1.out_channels for stage in stages] == [64, 128, 256, 512]
    assert [len(stage) for stage in stages] == [2, 2, 2, 2]


def test_resnet18_width_scales_channels():
    model = resnet18(num_classes=3, width=8)
    assert model.layer4[0].conv1.out_channels == 64
    assert model.linear.in_features == 64 and model.linear.out_features == 3


# ---------------------------------------------------------------------------- config


def test_default_config_is_the_study_recipe():
    cfg = TrainConfig()
    cfg.validate()
    assert (cfg.epochs, cfg.batch_size, cfg.lr) == (50, 256, 0.01)


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("epochs", 2.5),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", -0.1),
        ("lr", float("nan")),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("schedule", "foo"),
        ("warmup_epochs", 50),
        ("label_smoothing", 1.0),
        ("width", 0),
        ("augment", "yes"),
    ],
)
def test_validate_rejects_with_one_line_naming_the_field(field, value):
    with pytest.raises(ValueError) as info:
        TrainConfig(**{field: value}).validate()
    message = str(info.value)
    assert message.startswith(f"train.{field}: ") and "\n" not in message
    assert repr(value) in message


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match=r"^train\.nesterov: "):
        TrainConfig(momentum=0.0, nesterov=True).validate()
    TrainConfig(momentum=0.0, nesterov=False).validate()


def test_learning_rate_schedules():
    cfg = TrainConfig(epochs=10, lr=0.1)
    lrs = [learning_rate(cfg, s, steps_per_epoch=5) for s in range(50)]
    assert lrs[0] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 1e-3 and learning_rate(cfg, 50, 5) == pytest.approx(0.0, abs=1e-12)
    assert lrs[25] == pytest.approx(0.05)  # half way down the cosine

    warm = TrainConfig(epochs=10, lr=0.1, warmup_epochs=2, schedule="constant")
    assert [learning_rate(warm, s, 5) for s in range(10)] == pytest.approx(
        [0.01 * (s + 1) for s in range(10)])
    assert learning_rate(warm, 30, 5) == pytest.approx(0.1)


# ----------------------------------------------------------------------- augmentation


def test_augment_is_a_translate_and_flip_of_the_padded_image():
    gen = torch.Generator().manual_seed(0)
    padded = torch.randint(0, 256, (16, 3, 8 + 2 * PAD, 8 + 2 * PAD), dtype=torch.uint8)
    centre = padded[:, :, PAD:-PAD, PAD:-PAD]
    assert torch.equal(augment_with(padded, None), centre)

    out = augment_with(padded, draw_augmentation(len(padded), gen))
    assert out.shape == centre.shape and out.dtype == torch.uint8
    shifts, flips = set(), 0
    for img, src in zip(out, padded):
        matches = [(dy, dx, f) for dy in range(2 * PAD + 1) for dx in range(2 * PAD + 1)
                   for f in (False, True)
                   if torch.equal(img, src[:, dy:dy + 8, dx:dx + 8].flip(2) if f
                                  else src[:, dy:dy + 8, dx:dx + 8])]
        assert matches, "an augmented image must be a crop (maybe flipped) of its padded source"
        shifts.add(matches[0][:2])
        flips += matches[0][2]
    assert len(shifts) > 4 and 0 < flips < 16  # the draws vary across the batch


# --------------------------------------------------------------------------- training


def test_train_epoch_reports_metrics_and_stops_after_the_last_epoch():
    trainer = make_trainer(tiny_config(epochs=1))
    metrics = trainer.train_epoch()
    assert set(metrics) == {"train_loss", "train_acc", "lr", "epoch_time_s"}
    assert math.isfinite(metrics["train_loss"]) and 0 <= metrics["train_acc"] <= 1
    assert metrics["lr"] == pytest.approx(learning_rate(trainer.cfg, 1, trainer.steps_per_epoch))
    assert trainer.epoch == 1 and trainer.step == 2  # 64 images, batch 32
    with pytest.raises(RuntimeError):
        trainer.train_epoch()


def test_same_seed_same_weights_different_seed_differs():
    cfg = tiny_config(epochs=1)
    a, b, c = make_trainer(cfg, seed=1), make_trainer(cfg, seed=1), make_trainer(cfg, seed=2)
    assert not torch.equal(a.model.stem[0].weight, c.model.stem[0].weight)
    ma, mb, mc = a.train_epoch(), b.train_epoch(), c.train_epoch()
    assert_same_weights(weights(a), weights(b))
    assert ma["train_loss"] == mb["train_loss"] != mc["train_loss"]
    assert not torch.equal(a.model.linear.weight, c.model.linear.weight)


def test_seed_does_not_touch_global_rng():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    make_trainer(tiny_config(epochs=1), seed=99).train_epoch()
    assert torch.equal(torch.rand(3), expected)


def test_resume_gives_the_same_weights_as_an_uninterrupted_run():
    cfg = tiny_config(epochs=2, schedule="cosine", warmup_epochs=1)
    straight = make_trainer(cfg, seed=5)
    straight.train_epoch()
    state = straight.state_dict()  # a snapshot: training on must not change it
    final_metrics = straight.train_epoch()

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    resumed = make_trainer(cfg, seed=6)  # the seed comes back from the checkpoint
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.epoch == 1
    resumed_metrics = resumed.train_epoch()

    assert_same_weights(weights(straight), weights(resumed))
    for key in ("train_loss", "train_acc", "lr"):
        assert resumed_metrics[key] == final_metrics[key]
    assert_same_weights(straight.state_dict()["optimizer"]["state"][0],
                        resumed.state_dict()["optimizer"]["state"][0])


def test_load_state_dict_refuses_another_config():
    state = make_trainer(tiny_config(epochs=2)).state_dict()
    with pytest.raises(ValueError, match="config"):
        make_trainer(tiny_config(epochs=3)).load_state_dict(state)


def test_trainer_rejects_bad_data():
    x, y = colour_task(4, seed=0)
    with pytest.raises(ValueError, match="train_x"):
        Trainer(tiny_config(), x.astype(np.float32), y, 4, seed=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="train_y"):
        Trainer(tiny_config(), x, y + 1, 4, seed=0, device="cpu", progress=False)


# ------------------------------------------------------------------ learning and eval


@pytest.fixture(scope="module")
def trained():
    """A width-8 ResNet18 trained for 3 epochs on the colour task, and a held-out set."""
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.05, width=8)
    x, y = colour_task(40, seed=1)
    trainer = Trainer(cfg, x, y, num_classes=4, seed=0, device="cpu", progress=False)
    for _ in range(cfg.epochs):
        trainer.train_epoch()
    test_x, test_y = colour_task(25, seed=2)
    return trainer.model, test_x, test_y


def test_trainer_learns_a_separable_task(trained):
    model, x, y = trained
    result = evaluate(model, x, y, num_classes=4, device="cpu")
    assert result.accuracy > 0.9
    assert model.training  # evaluate restores the mode it found


def test_evaluate_agrees_with_predict(trained):
    model, x, y = trained
    probs = predict(model, x, "cpu", batch_size=7)
    assert probs.dtype == np.float32 and probs.shape == (len(x), 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(predict(model, x, "cpu"), probs, rtol=1e-4, atol=1e-6)

    result = evaluate(model, x, y, num_classes=4, device="cpu", batch_size=7)
    assert isinstance(result, Evaluation)
    np.testing.assert_array_equal(result.predictions, probs.argmax(1))
    np.testing.assert_array_equal(result.confidence, probs.max(1))
    assert result.predictions.dtype == np.int64 and result.confidence.dtype == np.float32


def test_confusion_and_per_class_accuracy_agree_with_predictions(trained):
    model, x, y = trained
    x, y = x[:-10], y[:-10]  # unequal class sizes
    result = evaluate(model, x, y, num_classes=5, device="cpu")  # class 4 has no images
    assert result.confusion.dtype == np.int64 and result.confusion.shape == (5, 5)
    expected = np.zeros((5, 5), np.int64)
    for t, p in zip(y, result.predictions):
        expected[t, p] += 1
    np.testing.assert_array_equal(result.confusion, expected)
    for c in range(4):
        in_c = y == c
        assert result.per_class_accuracy[c] == pytest.approx((result.predictions[in_c] == c).mean())
    assert np.isnan(result.per_class_accuracy[4])
    assert result.accuracy == pytest.approx(np.trace(result.confusion) / len(y))


class Scripted(nn.Module):
    """Answers each batch with the next rows of fixed logits, whatever the images."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits, self.seen = logits, 0

    def forward(self, x):
        out = self.logits[self.seen:self.seen + len(x)]
        self.seen += len(x)
        return out


def test_per_class_precision_and_f1_come_from_the_confusion_matrix_nan_where_undefined():
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 1, 1, 0, 0, 0])     # class 2 never predicted, class 3 neither present nor predicted
    logits = 5.0 * F.one_hot(torch.tensor(predicted), 4).float()
    result = evaluate(Scripted(logits), np.zeros((8, 32, 32, 3), np.uint8), y, num_classes=4, device="cpu")
    np.testing.assert_array_equal(result.predictions, predicted)
    np.testing.assert_allclose(result.per_class_accuracy, [2 / 3, 1, 0, np.nan])                # recall
    np.testing.assert_allclose(result.per_class_precision, [2 / 5, 2 / 3, np.nan, np.nan])      # tp / predicted
    np.testing.assert_allclose(result.per_class_f1, [0.5, 0.8, 0, np.nan])          # 2 tp / (2 tp + fp + fn)
    expected_loss = -F.log_softmax(logits, 1)[torch.arange(8), torch.tensor(y)].mean().item()
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)


def test_each_recipe_builds_the_optimiser_schedule_augmentation_and_stem_it_names():
    import torchvision

    from synthaug.config import TrialConfig, with_recipe
    from synthaug.models.classifier import learning_rate

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 64)
    scale = TrainConfig(epochs=3, batch_size=16, lr=0.01, width=8)
    study = with_recipe(TrialConfig(recipe="study", train=scale)).train
    strong = with_recipe(TrialConfig(recipe="strong", train=scale)).train
    assert (study.epochs, study.batch_size, study.lr, study.width) == (3, 16, 0.01, 8)     # the scale is kept
    steps = range(3 * 4)
    trainer = Trainer(study, x, y, 10, seed=0, device="cpu", progress=False)
    group = trainer.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.0, False, 0.0)      # plain SGD
    assert {learning_rate(study, s, 4) for s in steps} == {0.01}                                   # constant
    assert not study.augment and isinstance(trainer.model.stem[-1], torch.nn.MaxPool2d)
    assert trainer.model.stem[0].kernel_size == (7, 7) and trainer.model.stem[0].stride == (2, 2)
    trainer = Trainer(strong, x, y, 10, seed=0, device="cpu", progress=False)
    group = trainer.optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 5e-4)
    rates = [learning_rate(strong, s, 4) for s in steps]
    assert rates[0] == pytest.approx(0.01) and rates == sorted(rates, reverse=True) and rates[-1] < 2e-4   # cosine
    assert strong.augment and trainer.model.stem[0].kernel_size == (3, 3) and len(trainer.model.stem) == 3
    # the study's "standard ResNet18" is torchvision's: the same parameters, tensor by tensor
    ours = resnet18(10, 64, "imagenet")
    theirs = torchvision.models.resnet18(num_classes=10)
    assert sorted(p.numel() for p in ours.parameters()) == sorted(p.numel() for p in theirs.parameters())
    assert sum(p.numel() for p in ours.parameters()) == 11_181_642
    custom = with_recipe(TrialConfig(recipe="custom", train=dataclasses.replace(scale, momentum=0.5))).train
    assert custom.momentum == 0.5


# ------------------------------------------------------------- budgets and class weights


def counted_steps(trainer: Trainer) -> int:
    """Train every epoch, counting the model's training forward passes (one an optimizer step)."""
    calls = []
    hook = trainer.model.register_forward_hook(lambda module, args, out: calls.append(module.training))
    while trainer.epoch < trainer.cfg.epochs:
        trainer.train_epoch()
    hook.remove()
    assert sum(calls) == trainer.step
    return sum(calls)


def test_step_budget_trains_the_same_steps_at_every_added_count():
    from synthaug.config import TrialConfig
    from synthaug.data.mixing import compose
    from synthaug.data.sources import Dataset

    x, y = colour_task(40, seed=3)
    data = Dataset("colours", ("r", "g", "b", "y"), x, y, x[:8], y[:8], digest="0" * 64)
    steps = {}
    for budget in ("epochs", "steps"):
        for k in (0, 10, 100):
            cfg = TrialConfig(imbalance=0.5, real_per_class=30, augment_classes=("y",), augment_count=k,
                              augment_source="oversample")
            training = compose(cfg, data, lambda c, n: None)
            assert training.reference_images == 30 + 23 + 18 + 15            # the long tail, before augmentation
            trainer = Trainer(tiny_config(epochs=2, batch_size=8, budget=budget), training.x, training.y, 4, seed=0,
                              device="cpu", progress=False, reference_images=training.reference_images)
            steps[budget, k] = counted_steps(trainer)
    assert steps["steps", 0] == steps["steps", 10] == steps["steps", 100] == 2 * math.ceil(86 / 8)
    assert steps["epochs", 0] == steps["steps", 0] < steps["epochs", 10] < steps["epochs", 100] == 2 * math.ceil(186 / 8)


def test_epoch_order_draws_every_image_at_the_same_rate_across_epochs():
    from synthaug.models.epoch_order import EpochOrder

    order, gen = EpochOrder(10, per_epoch=4), torch.Generator().manual_seed(0)
    drawn = torch.cat([order.next_epoch(gen) for _ in range(5)])             # 20 images: exactly two passes
    assert torch.bincount(drawn, minlength=10).tolist() == [2] * 10
    assert sorted(drawn[:10].tolist()) == list(range(10))                    # the first pass is a permutation


def test_step_budget_resumes_mid_pass_to_the_same_weights():
    cfg = tiny_config(epochs=2, batch_size=16, budget="steps")
    x, y = colour_task(16, seed=123)
    straight = Trainer(cfg, x, y, 4, seed=5, device="cpu", progress=False, reference_images=40)
    straight.train_epoch()
    assert straight.step == 3 and len(straight.epoch_order.remaining) == 24     # 40 of a 64-image pass drawn
    buffer = io.BytesIO()
    torch.save(straight.state_dict(), buffer)
    final_metrics = straight.train_epoch()

    buffer.seek(0)
    resumed = Trainer(cfg, x, y, 4, seed=6, device="cpu", progress=False, reference_images=40)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))      # as a trial restores it: no pickle
    resumed_metrics = resumed.train_epoch()
    assert_same_weights(weights(straight), weights(resumed))
    assert resumed_metrics["train_loss"] == final_metrics["train_loss"] and resumed.step == straight.step == 6
    with pytest.raises(ValueError, match="per_epoch"):       # another reference: another schedule
        Trainer(cfg, x, y, 4, seed=5, device="cpu", progress=False, reference_images=48).load_state_dict(
            straight.state_dict())


def test_class_weights_multiply_each_images_whole_smoothed_loss():
    from synthaug.models.classifier import training_loss

    logits = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    weights = torch.tensor([0.5, 1.0, 2.0])
    smoothing = 0.2
    log_p = torch.log_softmax(logits, 1)
    each = -(1 - smoothing) * log_p[torch.arange(6), y] - smoothing / 3 * log_p.sum(1)     # smoothed CE, by hand
    loss, metric = training_loss(logits, y, smoothing, weights)
    assert loss.item() == pytest.approx((weights[y] * each).mean().item(), rel=1e-6)
    assert metric.item() == pytest.approx(each.sum().item(), rel=1e-6)      # train_loss stays unweighted
    plain, plain_metric = training_loss(logits, y, smoothing, None)
    assert plain.item() == pytest.approx(each.mean().item(), rel=1e-6) and plain_metric.item() == pytest.approx(
        metric.item(), rel=1e-6)
    assert training_loss(logits, y, smoothing, torch.ones(3))[0].item() == pytest.approx(plain.item(), rel=1e-6)


def test_reweighted_trainer_differs_and_bad_weights_are_refused():
    x, y = colour_task(8, seed=1)
    cfg = tiny_config(epochs=1)
    plain = Trainer(cfg, x, y, 4, seed=0, device="cpu", progress=False)
    weighted = Trainer(cfg, x, y, 4, seed=0, device="cpu", progress=False,
                       class_weights=np.array([0.4, 0.4, 0.4, 2.8]))
    plain.train_epoch(), weighted.train_epoch()
    assert not torch.equal(plain.model.linear.weight, weighted.model.linear.weight)
    with pytest.raises(ValueError, match="class_weights"):
        Trainer(cfg, x, y, 4, seed=0, device="cpu", progress=False, class_weights=np.array([1.0, 1.0, -1.0, 1.0]))


def test_budget_is_validated():
    with pytest.raises(ValueError) as info:
        TrainConfig(budget="time").validate()
    assert str(info.value) == "train.budget: one of epochs, steps, got 'time'"
