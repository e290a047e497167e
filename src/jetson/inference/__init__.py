from imgclass.compat.inference import *  # noqa: F401,F403
from imgclass.compat.inference import __all__  # noqa: F401
