"""The figures the book draws. Each chapter's plots live in their own submodule; all are re-exported here.

Every function draws on a matplotlib Axes (a new figure if none is given) and returns the Axes,
so notebooks end plotting cells with ``plt.show()`` and tests can call them headless.
"""

from .common import heatmap, new_axes  # noqa: F401
from .tokens import *  # noqa: F401,F403
from .generation import *  # noqa: F401,F403
from .embeddings import *  # noqa: F401,F403
from .rope import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .masks import *  # noqa: F401,F403
from .cache import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .performance import *  # noqa: F401,F403
from .quant import *  # noqa: F401,F403
from .training import *  # noqa: F401,F403
from .language import *  # noqa: F401,F403
from .parallel import *  # noqa: F401,F403
from .evals import *  # noqa: F401,F403
from .finetune import *  # noqa: F401,F403
