"""`tempscale_rag.eval`: the evaluator under the name the docs use; everything lives in `tempscale_rag.evaluation`."""

from tempscale_rag.evaluation import *  # noqa: F403
from tempscale_rag.evaluation import __all__  # noqa: F401
