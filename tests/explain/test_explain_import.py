import subprocess
import sys


def test_import_does_not_load_torch_shap_grad_cam_or_matplotlib():
    heavy = ("torch", "shap", "pytorch_grad_cam", "matplotlib")
    code = (
        f"import sys, skinfuse.explain\nprint(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    loaded = subprocess.check_output([sys.executable, "-c", code], text=True, timeout=120)
    assert loaded.strip() == ""
