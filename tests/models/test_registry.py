"""The model registry (lmr_jax/models/__init__.py): each system's own config fields, building
through the registry, the sentences for unknown names and other systems' fields, a system
added by one registry line, renamed fields, and model configs saved with checkpoints before
each system owned its config (one flat config with every system's fields)."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
import pytest

from lmr_jax import checkpoints, models, predict_io, smpl
from lmr_jax import config as config_lib
from lmr_jax.models import common, hmr, lmr, vibe
from tests.models.small_models import H, body_model, small_config

SHARED = {"num_iterations": 3, "dtype": "float32", "mean_params": "", "joint_layout": "vibe49",
          "head_init": "small"}  # fmt: skip
RECURRENT = ("hidden_size", "gru_layers", "bidirectional", "dropout", "scan_unroll")
OWN = {  # each system's fields beyond the shared ones, with their defaults
    "lmr": {"hidden_size": 512, "gru_layers": 1, "bidirectional": False, "dropout": 0.0,
            "scan_unroll": 1, "camera": "rnn", "single_rnn": False, "no_root_dependency": False,
            "single_rnn_hidden_size": 0, "parts": tuple(smpl.PARTS.items())},
    "vibe": {"hidden_size": 1024, "gru_layers": 2, "bidirectional": False, "dropout": 0.0,
             "scan_unroll": 1, "regressor_hidden": 1024, "regressor_dropout": 0.5,
             "add_linear": True, "use_residual": True},
    "hmr": {"regressor_hidden": 1024, "regressor_dropout": 0.5},
}  # fmt: skip

# The one flat model config every checkpoint saved before the registry holds (the old
# models.default_model_config(name): every field of every system), as JSON.
OLD_FLAT = {
    "hidden_size": 512, "num_iterations": 3, "gru_layers": 1, "bidirectional": False,
    "dropout": 0.0, "camera": "rnn", "single_rnn": False, "no_root_dependency": False,
    "single_rnn_hidden_size": 0, "dtype": "float32", "mean_params": "",
    "joint_layout": "vibe49", "parts": [[k, list(v)] for k, v in smpl.PARTS.items()],
    "head_init": "small", "regressor_hidden": 1024, "regressor_dropout": 0.5,
    "add_linear": True, "use_residual": True, "scan_unroll": 1,
}  # fmt: skip


def old_flat(name, **values):
    """A model config as saved before the registry, for `name` (the old defaults of
    models.default_model_config, whose hidden_size and gru_layers depended on the name)."""
    old = {**OLD_FLAT, "name": name, "hidden_size": 512 if name == "lmr" else 1024,
           "gru_layers": 2 if name == "vibe" else 1}  # fmt: skip
    return {**old, **values}


@pytest.mark.parametrize("name", ["lmr", "vibe", "hmr"])
def test_each_system_owns_exactly_its_fields_with_their_defaults(name):
    config = models.default_model_config(name)
    assert models.SYSTEMS[name].default_config().to_dict() == config.to_dict()
    assert config.to_dict() == {"name": name, **SHARED, **OWN[name]}
    assert models.MODEL_NAMES == ("lmr", "vibe", "hmr", "hkmr", "dsd", "satn", "pchmr")


@pytest.mark.parametrize(
    "name,module_type,top_level",
    [("lmr", lmr.LMR, {"pose", "shape", "shape_head", "camera", "camera_head"}),
     ("vibe", vibe.VIBE, {"encoder", "regressor"}),
     ("hmr", hmr.HMR, {"regressor"})],
)  # fmt: skip
def test_build_through_the_registry(name, module_type, top_level):
    config = small_config(name, num_iterations=2)
    model = models.build_model(config, body_model())
    assert type(model) is module_type and model.num_iterations == 2
    if "hidden_size" in config:
        assert model.hidden_size == H
    if "regressor_hidden" in config:
        assert model.regressor_hidden == H
    features = jax.ShapeDtypeStruct((1, 4, 16), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), features)["params"]
    assert set(params) == top_level
    assert models.count_params(params) == models.model_param_count(config, 16) > 0


def test_an_unknown_model_name_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown model 'hkmx', expected one of \('lmr', "):
        models.default_model_config("hkmx")
    config = models.default_model_config("lmr")
    config.name = "lmx"
    with pytest.raises(ValueError, match=r"model.name is 'lmx', expected one of \('lmr', 'vibe'"):
        models.build_model(config, body_model())


@pytest.mark.parametrize(
    "name,field,value",
    [("vibe", "single_rnn", True), ("vibe", "single_rnn", False), ("lmr", "add_linear", True),
     ("hmr", "hidden_size", 16), ("hmr", "scan_unroll", 1), ("lmr", "hiden_size", 16)],
)  # fmt: skip
def test_a_field_the_system_lacks_is_refused_in_one_sentence(name, field, value):
    config = models.default_model_config(name)
    config[field] = value  # another system's field (even at its default), or a typo
    fields = ", ".join(sorted(models.default_model_config(name)))
    sentence = f"model.{field} is not a field of the '{name}' model; its fields: {fields}."
    for check in (models.check_model_config, models.SYSTEMS[name].check_config):
        with pytest.raises(ValueError) as error:
            check(config)
        assert str(error.value) == sentence
    with pytest.raises(ValueError, match=f"model.{field} is not a field of the '{name}'"):
        models.build_model(config, body_model())


def test_the_config_check_refuses_another_systems_field_before_training():
    config = config_lib.base_config("hmr")
    config_lib.check(config)  # HMR's own fields: accepted
    config.model.hidden_size = 128  # what the variants set for every model before
    with pytest.raises(ValueError, match="model.hidden_size is not a field of the 'hmr' model"):
        config_lib.check(config)


def test_a_missing_field_takes_its_default():
    config = small_config("lmr", single_rnn=True)
    del config["single_rnn_hidden_size"], config["scan_unroll"]
    completed = models.complete_model_config(config)
    assert completed.single_rnn_hidden_size == 0 and completed.scan_unroll == 1
    assert completed.hidden_size == H and completed.single_rnn
    model = models.build_model(config, body_model())
    assert model.single_rnn_hidden_size == 0 and model.scan_unroll == 1


@pytest.mark.parametrize(
    "overrides,message",
    [({"dtype": "float16"}, "model.dtype is 'float16', expected one of ('float32', 'bfloat16')"),
     ({"regressor_dropout": 1.0}, "model.regressor_dropout is 1.0, expected a rate in [0, 1)"),
     ({"num_iterations": 0}, "model.num_iterations is 0, expected a positive integer"),
     ({"joint_layout": "vibe50"}, "vibe50")],
)  # fmt: skip
def test_shared_and_regressor_values_are_checked_for_hmr(overrides, message):
    config = models.default_model_config("hmr")
    config.update(overrides)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):  # fmt: skip
        hmr.check_config(config)


def _toy_system():
    """A system as a new file would define it: shared fields plus one of its own."""

    def default_config():
        config = common.shared_config("toy")
        config.width = 7
        return config

    def check_config(config):
        common.check_shared(config, default_config())
        common.check_positive(config, ["width"])

    def build(config, body_model):
        return hmr.HMR(regressor_hidden=int(config.width), regressor_dropout=0.0,
                       **common.shared_kwargs(config, body_model))  # fmt: skip

    return types.SimpleNamespace(default_config=default_config, check_config=check_config,
                                 build=build)  # fmt: skip


def test_a_new_system_is_one_registry_line(monkeypatch):
    monkeypatch.setitem(models.SYSTEMS, "toy", _toy_system())
    config = models.default_model_config("toy")
    assert config.to_dict() == {"name": "toy", **SHARED, "width": 7}
    config.width = 5
    model = models.build_model(config, body_model())
    assert type(model) is hmr.HMR and model.regressor_hidden == 5
    config.width = 0
    with pytest.raises(ValueError, match="model.width is 0, expected a positive integer"):
        models.build_model(config, body_model())
    config.width, config.camera = 5, "rnn"
    with pytest.raises(ValueError, match="model.camera is not a field of the 'toy' model"):
        models.build_model(config, body_model())
    saved = {**config.to_dict(), "hidden_size": 3}
    assert checkpoints.saved_model_view(saved) == {"name": "toy", **SHARED, "width": 5}


def test_a_renamed_field_is_named_and_mapped(monkeypatch):
    monkeypatch.setattr(lmr, "RENAMED_FIELDS", {"width": "hidden_size"}, raising=False)
    config = models.default_model_config("lmr")
    config.width = 64
    with pytest.raises(ValueError) as error:
        models.build_model(config, body_model())
    assert str(error.value) == ("model.width of the 'lmr' model was renamed to "
                                "model.hidden_size; set model.hidden_size instead.")  # fmt: skip
    saved = {k: v for k, v in old_flat("lmr", width=64).items() if k != "hidden_size"}
    assert models.saved_model_config(saved)["hidden_size"] == 64
    view = checkpoints.saved_model_view(saved)
    assert view["hidden_size"] == 64 and "width" not in view
    assert models.unknown_field_message("lmr", "width").startswith("model.width of the 'lmr'")


@pytest.mark.parametrize(
    "name,foreign",
    [("lmr", {"add_linear": False, "regressor_hidden": 16}),
     ("vibe", {"single_rnn": True, "camera": "dense"}),
     ("hmr", {"hidden_size": 16, "gru_layers": 2, "dropout": 0.3})],
)  # fmt: skip
def test_an_old_flat_saved_config_loads_as_its_systems_config(tmp_path, name, foreign):
    """A checkpoint's metadata in the old flat layout: the other systems' fields are dropped,
    at their defaults or not (the model never read them), so the current config matches."""
    config = config_lib.smoke(config_lib.base_config(name))
    compat = checkpoints.compat_view(config)
    own = {k: v for k, v in compat["model"].items() if k != "name"}
    compat["model"] = old_flat(name, **own, **foreign)
    del compat["model"]["scan_unroll"]  # and a field added later: its default
    mngr = checkpoints.checkpoint_manager(str(tmp_path), 1)
    mngr.save(1, args=ocp.args.Composite(meta=ocp.args.JsonSave({"compat": compat, "step": 1})))
    mngr.wait_until_finished()
    saved = checkpoints.read_meta(mngr, 1)["compat"]["model"]
    assert saved == checkpoints.json_view(config.model)
    assert not set(foreign) & set(saved)
    checkpoints.check_compatible(mngr, 1, config)  # accepted
    models.build_model(ml_collections.ConfigDict(saved), body_model())
    config.model.num_iterations = 2  # one of the system's own fields still counts
    with pytest.raises(checkpoints.TrainingError, match="model.num_iterations was 3, now 2"):
        checkpoints.check_compatible(mngr, 1, config)


def test_prediction_rebuilds_a_run_saved_with_an_old_flat_config(tmp_path):
    """predict_io.load_run on an HMR run saved by the old smoke variant (hidden_size 32 on
    every model, HMR's unused): the model is HMR's with the saved regressor width."""
    config = config_lib.smoke(config_lib.base_config("hmr"))
    config.model.regressor_hidden, config.model.num_iterations = 16, 1
    model = models.build_model(config.model, body_model())
    features = jnp.zeros((1, config.data.window, 8))
    params = jax.jit(model.init)(jax.random.key(0), features)["params"]
    compat = checkpoints.compat_view(config)
    compat["model"] = old_flat("hmr", hidden_size=32, regressor_hidden=16, num_iterations=1)
    mngr = checkpoints.checkpoint_manager(str(tmp_path), 1)
    state = {"step": 0, "params": params, "opt_state": {}}
    meta = {"compat": compat, "step": 0}
    mngr.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                         meta=ocp.args.JsonSave(meta)))  # fmt: skip
    mngr.wait_until_finished()
    loaded, _, info = predict_io.load_run(str(tmp_path), model_config=config.model)
    assert type(loaded) is hmr.HMR and loaded.regressor_hidden == 16
    assert loaded.num_iterations == 1 and "hidden_size" not in info["model_config"]
    config.model.regressor_hidden = 32
    with pytest.raises(predict_io.PredictError, match="model.regressor_hidden was 16, now 32"):
        predict_io.load_run(str(tmp_path), model_config=config.model)
