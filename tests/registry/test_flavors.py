"""Every flavor saves a small trained model and loads it back predicting exactly the same."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from shipway.core.errors import InvalidInput, MissingDependency, PermissionDenied
from shipway.registry.flavors import FLAVORS, flavor_for, get_flavor
from shipway.registry.flavors._common import require
from shipway.registry.flavors.lightgbm import LIGHTGBM
from shipway.registry.flavors.onnx import ONNX
from shipway.registry.flavors.pyfunc import PYFUNC
from shipway.registry.flavors.sklearn import SKLEARN, SklearnFlavor
from shipway.registry.flavors.torch import TORCH
from shipway.registry.flavors.xgboost import XGBOOST

# LightGBM warns when run with verbosity >= 0; verbose=-1 silences it, and these models are tiny.
LGB_PARAMS: dict[str, Any] = {"n_estimators": 8, "num_leaves": 7, "min_child_samples": 5, "verbose": -1}


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """200 rows of 4 numeric features, with binary, three-class and continuous targets."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(200, 4))
    frame = pd.DataFrame(x, columns=["f0", "f1", "f2", "f3"])
    binary = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.3, size=200) > 0).astype(np.int64)
    three = np.digitize(x[:, 2] - x[:, 3], [-0.7, 0.7]).astype(np.int64)
    target = 2.0 * x[:, 0] - x[:, 2] + rng.normal(scale=0.1, size=200)
    return frame, binary, three, target


def round_trip(flavor: Any, model: Any, tmp_path: Path, *, trust: bool = False) -> tuple[dict[str, Any], Any]:
    """Save ``model`` with ``flavor`` into an empty folder and load it back."""
    folder = tmp_path / "model"
    folder.mkdir(parents=True)
    meta = flavor.save(model, folder)
    assert meta["format"] == flavor.format
    return meta, flavor.load(folder, meta, trust=trust)


# -- registry -------------------------------------------------------------------------------


def test_flavor_order_puts_boosting_libraries_before_sklearn_and_pyfunc_last() -> None:
    names = [f.name for f in FLAVORS]
    assert names == ["xgboost", "lightgbm", "sklearn", "onnx", "torch", "pyfunc"]
    assert names.index("xgboost") < names.index("sklearn")
    assert names.index("lightgbm") < names.index("sklearn")


def test_get_flavor_by_name_and_unknown_name_lists_known_ones() -> None:
    assert get_flavor("sklearn") is SKLEARN
    assert get_flavor("pyfunc") is PYFUNC
    with pytest.raises(InvalidInput, match="known flavors: xgboost, lightgbm, sklearn"):
        get_flavor("h2o")


def test_flavor_for_picks_the_native_flavor(data: tuple[Any, ...]) -> None:
    import lightgbm as lgb
    import onnx
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame, binary, _, _ = data
    assert flavor_for(xgb.XGBClassifier(n_estimators=2)) is XGBOOST
    assert flavor_for(xgb.XGBRegressor()) is XGBOOST
    assert flavor_for(xgb.train({}, xgb.DMatrix(frame, label=binary), 1)) is XGBOOST
    assert flavor_for(lgb.LGBMClassifier()) is LIGHTGBM
    assert flavor_for(lgb.LGBMRegressor()) is LIGHTGBM
    assert flavor_for(LogisticRegression()) is SKLEARN
    assert flavor_for(make_pipeline(StandardScaler(), LogisticRegression())) is SKLEARN
    assert flavor_for(onnx.ModelProto()) is ONNX

    class Custom:
        def predict(self, frame: Any) -> Any:
            return frame

    assert flavor_for(Custom()) is PYFUNC
    assert flavor_for(lambda frame: frame) is PYFUNC
    # A transformer cannot predict, so no flavor saves it.
    with pytest.raises(InvalidInput, match="StandardScaler"):
        flavor_for(StandardScaler())


def test_flavor_for_refuses_an_object_that_cannot_predict() -> None:
    class NotAModel:
        pass

    with pytest.raises(InvalidInput, match="NotAModel"):
        flavor_for(NotAModel())
    with pytest.raises(InvalidInput, match=r"builtins\.int"):
        flavor_for(3)
    # A class is callable, but calling it does not predict.
    with pytest.raises(InvalidInput, match=r"builtins\.type"):
        flavor_for(NotAModel)


def test_handles_does_not_import_ml_libraries() -> None:
    import subprocess

    heavy = ("sklearn", "skops", "xgboost", "lightgbm", "onnx", "onnxruntime", "torch", "cloudpickle")
    code = (
        "import sys\n"
        "from shipway.registry.flavors import flavor_for\n"
        "class M:\n"
        "    def predict(self, frame): return frame\n"
        "assert flavor_for(M()).name == 'pyfunc'\n"
        f"print(' '.join(m for m in {heavy!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_importing_a_flavor_library_keeps_the_collector_off_its_objects() -> None:
    # A fresh process, so the suite's own collector state is neither read nor changed.
    import subprocess

    code = (
        "import gc\n"
        "from shipway.registry.flavors._common import require\n"
        "from shipway.registry.flavors.sklearn import _skops_io\n"
        "_skops_io()\n"
        "frozen = gc.get_freeze_count()\n"
        "assert gc.isenabled() and frozen > 10_000, frozen\n"
        "require('skops.io', 'sklearn', 'x')\n"  # already imported: nothing more is frozen
        "assert gc.get_freeze_count() == frozen\n"
        "gc.disable()\n"
        "require('colorsys', 'sklearn', 'x')\n"  # a collector the caller turned off stays off
        "assert not gc.isenabled()\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_a_missing_library_names_the_extra_to_install() -> None:
    with pytest.raises(MissingDependency, match=r'pip install "shipway\[torch\]"'):
        require("shipway_no_such_module", "torch", "Saving a PyTorch model")


# -- sklearn --------------------------------------------------------------------------------


def test_sklearn_classifier_and_regressor_round_trip_exactly(data: tuple[Any, ...], tmp_path: Path) -> None:
    import sklearn
    from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    frame, binary, three, target = data
    models = {
        "pipeline": make_pipeline(StandardScaler(), LogisticRegression()).fit(frame, three),
        "forest": RandomForestClassifier(n_estimators=5, random_state=0).fit(frame, binary),
        "regressor": HistGradientBoostingRegressor(max_iter=10, random_state=0).fit(frame, target),
    }
    for label, model in models.items():
        meta, loaded = round_trip(SKLEARN, model, tmp_path / label)
        assert meta["sklearn_version"] == sklearn.__version__
        assert meta["estimator_class"].endswith(type(model).__name__)
        np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


def scale_by_two(x: Any) -> Any:
    """A function defined here, in the test module: skops does not trust it by default."""
    return x * 2


def test_sklearn_load_refuses_types_outside_the_allow_list(data: tuple[Any, ...], tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    frame, binary, _, _ = data
    model = make_pipeline(FunctionTransformer(scale_by_two), LogisticRegression()).fit(frame, binary)
    folder = tmp_path / "model"
    folder.mkdir()
    meta = SKLEARN.save(model, folder)

    with pytest.raises(PermissionDenied, match=r"scale_by_two") as denied:
        SKLEARN.load(folder, meta)
    [refused] = denied.value.details["untrusted_types"]
    assert refused.endswith(".scale_by_two")

    # A caller that vouches for the module (or passes trust=True) gets the model back.
    module = refused.rsplit(".", 1)[0]
    for loaded in (SklearnFlavor([module + "."]).load(folder, meta), SKLEARN.load(folder, meta, trust=True)):
        np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


def test_sklearn_allow_list_never_admits_code_running_builtins() -> None:
    assert SKLEARN.refused_types(["builtins.eval", "builtins.exec", "os.system", "builtins.int"]) == [
        "builtins.eval",
        "builtins.exec",
        "os.system",
    ]
    assert SKLEARN.refused_types(["sklearn.tree._tree.Tree", "scipy.sparse._csr.csr_matrix"]) == []


def test_sklearn_import_leaves_skops_default_trust_list_as_skops_computes_it() -> None:
    # Shipway swaps skops' module lookup for a faster one while skops.io imports; the SciPy
    # ufuncs skops trusts by default must come out exactly as skops itself names them, and the
    # lookup must be skops' own again afterwards. A fresh process, so skops is imported here.
    import subprocess

    code = (
        "import numpy as np, scipy.special\n"
        "from shipway.registry.flavors.sklearn import _skops_io, _whichmodule\n"
        "_skops_io()\n"
        "import skops.io._trusted_types as trusted, skops.io._utils as utils\n"
        "assert not hasattr(utils.whichmodule, '__wrapped__')\n"
        "assert trusted.SCIPY_UFUNC_TYPE_NAMES\n"
        "assert trusted.SCIPY_UFUNC_TYPE_NAMES == utils.get_public_type_names(scipy.special, np.ufunc)\n"
        "for name in dir(scipy.special):\n"
        "    obj = getattr(scipy.special, name)\n"
        "    if isinstance(obj, np.ufunc):\n"
        "        assert _whichmodule(utils.whichmodule, obj, name) == utils.whichmodule(obj, name), name\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "ok", out.stderr


# -- xgboost --------------------------------------------------------------------------------


def test_xgboost_models_round_trip_exactly_into_their_class(data: tuple[Any, ...], tmp_path: Path) -> None:
    import xgboost as xgb

    frame, binary, three, target = data
    params: dict[str, Any] = {"n_estimators": 8, "max_depth": 3, "n_jobs": 1}
    models = {
        "binary": xgb.XGBClassifier(**params).fit(frame, binary),
        "three": xgb.XGBClassifier(**params).fit(frame, three),
        "regressor": xgb.XGBRegressor(**params).fit(frame, target),
    }
    for label, model in models.items():
        meta, loaded = round_trip(XGBOOST, model, tmp_path / label)
        assert meta["class"] == type(model).__name__
        assert type(loaded) is type(model)
        np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))
        if label != "regressor":
            np.testing.assert_array_equal(loaded.classes_, model.classes_)
            np.testing.assert_array_equal(loaded.predict_proba(frame), model.predict_proba(frame))

    booster = xgb.train({"max_depth": 3, "nthread": 1}, xgb.DMatrix(frame, label=target), 8)
    meta, loaded = round_trip(XGBOOST, booster, tmp_path / "booster")
    assert meta["class"] == "Booster"
    np.testing.assert_array_equal(loaded.predict(frame), booster.predict(xgb.DMatrix(frame)))


def test_xgboost_load_refuses_a_class_name_outside_its_list(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="Unknown XGBoost class 'DMatrix'"):
        XGBOOST.load(tmp_path, {"format": "xgboost-ubj", "class": "DMatrix"})


# -- lightgbm -------------------------------------------------------------------------------


def test_lightgbm_classifiers_predict_the_original_labels(data: tuple[Any, ...], tmp_path: Path) -> None:
    import lightgbm as lgb

    frame, binary, three, _ = data
    labels = np.array(["low", "mid", "high"])[three]
    models = {
        "binary": lgb.LGBMClassifier(**LGB_PARAMS).fit(frame, binary),
        "strings": lgb.LGBMClassifier(**LGB_PARAMS).fit(frame, labels),
    }
    for label, model in models.items():
        meta, loaded = round_trip(LIGHTGBM, model, tmp_path / label)
        assert meta["class"] == "LGBMClassifier"
        assert meta["classes"] == model.classes_.tolist()
        np.testing.assert_array_equal(loaded.predict(frame), model.predict(frame))


def test_lightgbm_regressor_and_booster_round_trip_exactly(data: tuple[Any, ...], tmp_path: Path) -> None:
    import lightgbm as lgb

    frame, binary, _, target = data
    regressor = lgb.LGBMRegressor(**LGB_PARAMS).fit(frame, target)
    meta, loaded = round_trip(LIGHTGBM, regressor, tmp_path / "regressor")
    assert meta["classes"] is None
    np.testing.assert_array_equal(loaded.predict(frame), regressor.predict(frame))

    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 5, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(frame, label=binary), num_boost_round=8)
    meta, loaded = round_trip(LIGHTGBM, booster, tmp_path / "booster")
    assert meta["class"] == "Booster"
    # A bare Booster predicts probabilities, and so does the loaded one.
    np.testing.assert_array_equal(loaded.predict(frame), booster.predict(frame))


# -- onnx -----------------------------------------------------------------------------------


def test_onnx_model_round_trips_exactly(data: tuple[Any, ...], tmp_path: Path) -> None:
    import onnxruntime as ort
    from skl2onnx import to_onnx
    from sklearn.linear_model import LinearRegression, LogisticRegression

    frame, binary, _, target = data
    x32 = frame.to_numpy(dtype=np.float32)
    classifier = LogisticRegression().fit(x32, binary)
    proto = to_onnx(classifier, x32[:1], options={"zipmap": False}, target_opset=17)
    meta, loaded = round_trip(ONNX, proto, tmp_path / "classifier")
    assert meta["inputs"] == ["X"]
    # The first output is the label, the same labels sklearn predicts on the same float32 input.
    np.testing.assert_array_equal(loaded.predict(frame), classifier.predict(x32))

    # Bytes of a model work too; the loaded session's output equals a fresh session's, bit for bit.
    regressor = LinearRegression().fit(x32, target)
    data_bytes = to_onnx(regressor, x32[:1], target_opset=17).SerializeToString()
    assert ONNX.handles(data_bytes)
    _, loaded = round_trip(ONNX, data_bytes, tmp_path / "regressor")
    fresh = ort.InferenceSession(data_bytes, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(loaded.predict(frame), fresh.run(None, {"X": x32})[0])


def test_onnx_model_with_one_input_per_column(data: tuple[Any, ...], tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    frame, _, _, _ = data
    inputs = [helper.make_tensor_value_info(name, TensorProto.DOUBLE, [None, 1]) for name in ("f0", "f1")]
    output = helper.make_tensor_value_info("sum", TensorProto.DOUBLE, [None, 1])
    graph = helper.make_graph([helper.make_node("Add", ["f0", "f1"], ["sum"])], "add", inputs, [output])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    _, loaded = round_trip(ONNX, proto, tmp_path)
    expected = (frame["f0"] + frame["f1"]).to_numpy().reshape(-1, 1)
    np.testing.assert_array_equal(loaded.predict(frame), expected)
    with pytest.raises(InvalidInput, match="f1"):
        loaded.predict(frame[["f0"]])


def test_onnx_save_refuses_bytes_that_are_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        ONNX.save(b"\x08\x07 definitely not protobuf \xff\xff", tmp_path)


# -- torch ----------------------------------------------------------------------------------


# TorchScript is deprecated in favour of torch.export since torch 2.10, and every torch.jit call warns.
@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
def test_torch_module_round_trips_exactly(data: tuple[Any, ...], tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.hidden = torch.nn.Linear(4, 8)
            self.out = torch.nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.out(torch.relu(self.hidden(x))), dim=1)

    frame, _, _, _ = data
    torch.manual_seed(0)
    net = Net()
    assert flavor_for(net) is TORCH
    meta, loaded = round_trip(TORCH, net, tmp_path / "module")
    assert meta["module_class"].endswith("Net")
    with torch.no_grad():
        expected = net.eval()(torch.tensor(frame.to_numpy(dtype=np.float32))).numpy()
    np.testing.assert_array_equal(loaded.predict(frame), expected)

    # An already scripted module is saved as it is.
    scripted = torch.jit.script(net)
    assert flavor_for(scripted) is TORCH
    _, loaded = round_trip(TORCH, scripted, tmp_path / "scripted")
    np.testing.assert_array_equal(loaded.predict(frame), expected)


@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
def test_torch_refuses_a_module_torchscript_cannot_compile(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Dynamic(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return {str(k): v for k, v in x.items()}

    with pytest.raises(InvalidInput, match=r"torch\.jit\.trace"):
        TORCH.save(Dynamic(), tmp_path)


# -- pyfunc ---------------------------------------------------------------------------------


class Doubler:
    """A model no native flavor covers: predictions from plain Python."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return frame.to_numpy() * self.factor


def test_pyfunc_refuses_to_load_without_trust(data: tuple[Any, ...], tmp_path: Path) -> None:
    frame, _, _, _ = data
    folder = tmp_path / "model"
    folder.mkdir()
    meta = PYFUNC.save(Doubler(2.0), folder)
    with pytest.raises(PermissionDenied, match="executes arbitrary code when loaded; pass trust=True"):
        PYFUNC.load(folder, meta)
    loaded = PYFUNC.load(folder, meta, trust=True)
    np.testing.assert_array_equal(loaded.predict(frame), frame.to_numpy() * 2.0)


def test_pyfunc_wraps_a_plain_function(data: tuple[Any, ...], tmp_path: Path) -> None:
    frame, _, _, _ = data
    offset = 1.5
    meta, loaded = round_trip(PYFUNC, lambda f: f.sum(axis=1).to_numpy() + offset, tmp_path, trust=True)
    assert meta["kind"] == "callable"
    np.testing.assert_array_equal(loaded.predict(frame), frame.sum(axis=1).to_numpy() + 1.5)
