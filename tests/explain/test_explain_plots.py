import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from sklearn.utils import Bunch

from skinfuse.explain import (
    plot_grad_cam,
    plot_importance,
    plot_shap_summary,
    plot_shap_waterfall,
)

pytestmark = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # shap import


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def explanation():
    import shap

    rng = np.random.default_rng(0)
    values = rng.normal(0, 0.1, (6, 4, 3))
    values -= values.mean(axis=2, keepdims=True)
    data = np.array(
        [[f"/x/img_{i}.png", 30.0 + 5 * i, "male", "back"] for i in range(6)], dtype=object
    )
    return shap.Explanation(
        values=values,
        base_values=np.full((6, 3), 1 / 3),
        data=data,
        display_data=data,
        feature_names=["image", "age", "sex", "localization"],
        output_names=["bcc", "mel", "nv"],
    )


def test_plot_grad_cam(tmp_path, lesions):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    heat = rng.random((3, 8, 8)).astype(np.float32)  # coarser maps are resized to the images
    fig = plot_grad_cam(images, heat, y_true=["a", "b", "c"], y_pred=["a", "c", "c"],
                        path=tmp_path / "cam.png")  # fmt: skip
    assert isinstance(fig, Figure) and _is_png(tmp_path / "cam.png")
    assert len(fig.axes) == 3 * 3 + 1  # image | heatmap | overlay per case, one colour bar
    assert fig.axes[0].get_title(loc="left") == "true: a | pred: a"
    # paths are read at the heatmaps' size
    fig = plot_grad_cam(lesions.data["image_path"][:2], heat[:2])
    assert fig.axes[0].get_images()[0].get_array().shape[:2] == (8, 8)
    with pytest.raises(ValueError, match="3 images for 2 heatmaps"):
        plot_grad_cam(images, heat[:2])


@pytest.mark.parametrize("kind, class_", [("bar", None), ("bar", "mel"), ("beeswarm", None)])
def test_plot_shap_summary(tmp_path, explanation, kind, class_):
    path = tmp_path / "summary.png"
    fig = plot_shap_summary(explanation, kind=kind, class_=class_, path=path)
    assert isinstance(fig, Figure) and _is_png(path)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert sorted(labels) == sorted(explanation.feature_names)
    mean_abs = np.abs(explanation.values).mean(axis=(0, 2)) if class_ is None else None
    if kind == "bar" and mean_abs is not None:  # largest on top
        assert labels[-1] == explanation.feature_names[int(np.argmax(mean_abs))]


def test_plot_shap_waterfall(tmp_path, explanation):
    fig = plot_shap_waterfall(explanation, 2, class_="nv", path=tmp_path / "w.png")
    assert isinstance(fig, Figure) and _is_png(tmp_path / "w.png")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert "age = 40" in labels and "sex = male" in labels
    end = 1 / 3 + explanation.values[2, :, 2].sum()
    assert f"f(x) = {end:.3f}" in fig.axes[0].get_xlabel()
    plot_shap_waterfall(explanation, 0)  # the predicted class
    with pytest.raises(ValueError, match="not an output"):
        plot_shap_waterfall(explanation, 0, class_="akiec")
    with pytest.raises(ValueError, match="index must be"):
        plot_shap_waterfall(explanation, 6)


def test_plot_importance_and_confusion_matrix(tmp_path):
    importances = np.array([[0.3, 0.35, 0.32], [0.1, 0.12, 0.09], [0.0, 0.01, -0.01]])
    result = Bunch(
        feature_names=np.array(["image", "age", "sex"], dtype=object),
        importances=importances,
        importances_mean=importances.mean(axis=1),
    )
    fig = plot_importance(result, path=tmp_path / "imp.png")
    assert isinstance(fig, Figure) and _is_png(tmp_path / "imp.png")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["sex", "age", "image"]
    with pytest.raises(TypeError, match="modality_importance's result"):
        plot_importance({"a": 1})


@pytest.mark.parametrize(
    "plot, args, params, match",
    [
        ("plot_grad_cam", "images", dict(alpha=2.0), "'alpha' parameter of plot_grad_cam"),
        ("plot_grad_cam", "images", dict(max_images=0), "'max_images' parameter"),
        ("plot_grad_cam", "images", dict(path=3), "'path' parameter of plot_grad_cam"),
        ("plot_shap_summary", "explanation", dict(kind="violin"), "'kind' parameter"),
        ("plot_shap_summary", "explanation", dict(dpi=0), "'dpi' parameter"),
        ("plot_shap_waterfall", "explanation", dict(index="first"), "'index' parameter"),
        ("plot_importance", "result", dict(result=[0.1, 0.2]), "'result' parameter"),
    ],
)
def test_plots_refuse_bad_parameters(explanation, plot, args, params, match):
    import skinfuse.explain

    heat = np.zeros((2, 8, 8), dtype=np.float32)
    positional = {
        "images": dict(images=np.zeros((2, 8, 8, 3), dtype=np.uint8), heatmaps=heat),
        "explanation": dict(explanation=explanation),
        "result": {},
    }[args]
    with pytest.raises(ValueError, match=match):
        getattr(skinfuse.explain, plot)(**{**positional, **params})


def test_plot_confusion_matrix_old_name_warns_and_draws_the_same_figure():
    """skinfuse.explain.plot_confusion_matrix moved to skinfuse.metrics."""
    import skinfuse.explain
    from skinfuse.metrics import plot_confusion_matrix

    assert "plot_confusion_matrix" not in skinfuse.explain.__all__
    with pytest.warns(FutureWarning, match="skinfuse.metrics.plot_confusion_matrix"):
        from skinfuse.explain import plot_confusion_matrix as old_name
    with pytest.warns(FutureWarning, match="skinfuse.metrics.plot_confusion_matrix"):
        assert skinfuse.explain.plot_confusion_matrix is plot_confusion_matrix
    y_true = ["nv", "nv", "mel", "bcc", "mel"]
    y_pred = ["nv", "mel", "mel", "bcc", "nv"]
    old, new = (
        plot(y_true, y_pred, normalize="true") for plot in (old_name, plot_confusion_matrix)
    )
    assert [t.get_text() for t in old.axes[0].texts] == [t.get_text() for t in new.axes[0].texts]
    pixels = []
    for fig in (old, new):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="rgba")
        pixels.append(buffer.getvalue())
    assert pixels[0] == pixels[1]
    with pytest.raises(AttributeError, match="no attribute 'plot_confusion'"):
        skinfuse.explain.plot_confusion  # noqa: B018
