"""The trainer: section — Ludwig's defaults, and bad values refused with a message naming the key."""
import pytest

from hvd_trainer.config import DistributedConfig, TrainerConfig
from hvd_trainer.config_schema import set_dotted
from hvd_trainer.errors import ConfigError


def test_defaults_are_ludwigs():
    c = TrainerConfig.from_dict({})
    assert (c.learning_rate, c.epochs, c.train_steps, c.batch_size, c.eval_batch_size) == (0.001, 100, None, "auto", None)
    assert (c.max_batch_size, c.gradient_accumulation_steps, c.early_stop) == (2**40, "auto", 5)
    assert (c.steps_per_checkpoint, c.checkpoints_per_epoch, c.evaluate_training_set) == (0, 0, False)
    assert c.optimizer.type == "adam" and c.regularization_type == "l2" and c.regularization_lambda == 0
    assert c.gradient_clipping.clipglobalnorm == 0.5 and c.gradient_clipping.clipnorm is None
    assert c.learning_rate_scaling == "linear" and c.use_mixed_precision is False and c.compile is False
    s = c.learning_rate_scheduler
    assert (s.decay, s.decay_rate, s.decay_steps, s.staircase, s.reduce_on_plateau) == (None, 0.96, 10000, False, 0)
    assert (s.reduce_on_plateau_patience, s.reduce_on_plateau_rate, s.warmup_evaluations, s.warmup_fraction) == (10, 0.1, 0, 0.0)
    assert (c.increase_batch_size_on_plateau_patience, c.increase_batch_size_on_plateau_rate,
            c.increase_batch_size_on_plateau_max) == (5, 2.0, 512)


def test_values_are_coerced_where_yaml_is_loose():
    c = TrainerConfig.from_dict({"learning_rate": "1e-3", "epochs": 3.0, "optimizer": {"type": "adamw", "betas": [0.8, 0.9]}})
    assert c.learning_rate == 0.001 and c.epochs == 3 and c.optimizer.betas == (0.8, 0.9)


BAD_CONFIGS = [
    ({"learning_rat": 0.1}, ["trainer.learning_rat", "Did you mean 'learning_rate'"]),
    ({"epoch": 3}, ["trainer.epoch", "Did you mean 'epochs'"]),
    ({"learning_rate": -0.1}, ["trainer.learning_rate", "greater than 0"]),
    ({"learning_rate": "fast"}, ["trainer.learning_rate", "'fast'", "number"]),
    ({"epochs": 0}, ["trainer.epochs", "at least 1"]),
    ({"epochs": 2.5}, ["trainer.epochs", "integer"]),
    ({"batch_size": "big"}, ["trainer.batch_size", "'auto'"]),
    ({"batch_size": 0}, ["trainer.batch_size", "at least 1"]),
    ({"batch_size": 64, "max_batch_size": 32}, ["batch_size", "max_batch_size"]),
    ({"steps_per_checkpoint": 10, "checkpoints_per_epoch": 2}, ["steps_per_checkpoint", "checkpoints_per_epoch", "Set one of them to 0"]),
    ({"optimizer": {"type": "adamm"}}, ["trainer.optimizer.type", "Did you mean 'adam'"]),
    ({"optimizer": {"type": "sgd", "betas": [0.9, 0.99]}}, ["trainer.optimizer.betas", "does not apply to the sgd optimizer"]),
    ({"optimizer": {"type": "sgd", "nesterov": True}}, ["nesterov", "momentum"]),
    ({"optimizer": {"type": "adam", "betas": [0.9]}}, ["trainer.optimizer.betas", "2 values"]),
    ({"optimizer": "adam"}, ["trainer.optimizer", "mapping"]),
    ({"gradient_clipping": {"clipglobalnorm": -1}}, ["trainer.gradient_clipping.clipglobalnorm", "greater than 0"]),
    ({"gradient_clipping": {"clip_norm": 1}}, ["trainer.gradient_clipping.clip_norm", "Did you mean 'clipnorm'"]),
    ({"learning_rate_scaling": "quadratic"}, ["trainer.learning_rate_scaling", "'linear'"]),
    ({"learning_rate_scheduler": {"decay": "step"}}, ["trainer.learning_rate_scheduler.decay", "cosine"]),
    ({"learning_rate_scheduler": {"warmup_fraction": 1.5}}, ["warmup_fraction", "at most 1"]),
    ({"learning_rate_scheduler": {"warmup_fraction": 0.1, "warmup_evaluations": 2}}, ["warmup_evaluations", "warmup_fraction"]),
    ({"early_stop": -2}, ["trainer.early_stop", "at least -1"]),
    ({"should_shuffle": "yes"}, ["trainer.should_shuffle", "true or false"]),
    ({"regularization_type": "l3"}, ["trainer.regularization_type", "'l1'"]),
    ({"increase_batch_size_on_plateau_rate": 1.0}, ["increase_batch_size_on_plateau_rate", "greater than 1"]),
    ({"optimizer": {"type": "lbfgs"}, "use_mixed_precision": True}, ["lbfgs", "use_mixed_precision"]),
    ({"optimizer": {"type": "adam", "fused": True}, "use_mixed_precision": True}, ["fused", "use_mixed_precision"]),
    ({"optimizer": {"type": "nadam", "fused": True}}, ["trainer.optimizer.fused", "does not apply to the nadam"]),
]


@pytest.mark.parametrize("config,fragments", BAD_CONFIGS, ids=[str(i) for i in range(len(BAD_CONFIGS))])
def test_bad_trainer_config_is_refused_with_a_clear_message(config, fragments):
    with pytest.raises(ConfigError) as e:
        TrainerConfig.from_dict(config)
    message = str(e.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message  # one paragraph


def test_trainer_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="trainer must be a mapping"):
        TrainerConfig.from_dict([1, 2])


@pytest.mark.parametrize("config,fragment", [
    ({"strategy": "mpi"}, "distributed.strategy"),
    ({"compression": "int8"}, "distributed.compression"),
    ({"op": "max"}, "distributed.op"),
])
def test_bad_distributed_section_is_refused(config, fragment):
    with pytest.raises(ConfigError, match=fragment):
        DistributedConfig.from_dict(config)


def test_init_dist_strategy_refuses_unknown_names():
    from hvd_trainer.distributed import init_dist_strategy

    with pytest.raises(ConfigError, match="'nonsense'.*auto, horovod, local"):
        init_dist_strategy("nonsense")
    with pytest.raises(ConfigError, match="Did you mean 'horovod'"):
        init_dist_strategy("horovd")


def test_command_line_overrides_apply_dotted_keys_as_yaml_values():
    data = {"trainer": {"epochs": 3}}
    set_dotted(data, "trainer.epochs=8")
    set_dotted(data, "trainer.optimizer.type=sgd")
    set_dotted(data, "trainer.learning_rate=1e-2")
    assert data == {"trainer": {"epochs": 8, "optimizer": {"type": "sgd"}, "learning_rate": "1e-2"}}
    assert TrainerConfig.from_dict(data["trainer"]).learning_rate == 0.01
    with pytest.raises(ConfigError, match="not an assignment"):
        set_dotted(data, "trainer.epochs")


@pytest.mark.parametrize("optimizer,mixed_precision,fused", [
    ({"type": "adam"}, False, True),                      # the default: fused in full precision
    ({"type": "adamw"}, False, True),
    ({"type": "adam"}, True, False),                      # the gradient scaler needs the per-tensor loop
    ({"type": "adam", "fused": False}, False, False),     # torch's per-tensor loop on request
    ({"type": "sgd"}, False, False),                      # fused only when asked for
    ({"type": "sgd", "fused": True}, False, True),
])
def test_adam_is_fused_by_default_in_full_precision(optimizer, mixed_precision, fused):
    import torch

    from hvd_trainer.optimizers import create_optimizer

    config = TrainerConfig.from_dict({"optimizer": optimizer})
    built = create_optimizer(torch.nn.Linear(3, 2), config.optimizer, 0.1, mixed_precision)
    assert bool(built.param_groups[0].get("fused")) is fused


def test_a_fused_adam_trains_as_the_per_tensor_loop_to_rounding():
    import torch

    from hvd_trainer.optimizers import create_optimizer

    def flat(model):
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def train(fused):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        initial = flat(model)
        config = TrainerConfig.from_dict({"optimizer": {"type": "adam", "fused": fused}})
        opt = create_optimizer(model, config.optimizer, 0.01)
        x, y = torch.randn(64, 8, generator=torch.Generator().manual_seed(1)), torch.arange(64) % 3
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        assert (flat(model) - initial).abs().max() > 0.05  # it trained
        return flat(model)

    torch.testing.assert_close(train(True), train(False), rtol=1e-5, atol=1e-6)
