from imgclass.compat.utils import *  # noqa: F401,F403
from imgclass.compat.utils import __all__  # noqa: F401
