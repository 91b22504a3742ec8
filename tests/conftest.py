import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import WINDOW, random_hf_model, save_hf_sharded, tiny_args  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def one_thread():
    """Matrices as small as the training tests' run faster on one thread, and give the same numbers on
    any core count (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a module)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def hf_pair(tmp_path_factory):
    """(transformers model, sharded HF checkpoint dir, Mistral-layout checkpoint dir), one per session."""
    from mistral_nb.checkpoint import convert_checkpoint

    args = tiny_args()
    hf = random_hf_model(args, seed=1234)
    root = tmp_path_factory.mktemp("ckpt")
    hf_dir = save_hf_sharded(hf, root / "hf")
    mistral_dir = convert_checkpoint(hf_dir, root / "mistral", "mistral")
    return hf, hf_dir, mistral_dir

# Property tests: random examples on a developer's machine; in CI (CI=true) the same examples every
# run, so a landing never depends on the luck of the draw (failures found locally become regressions).
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
