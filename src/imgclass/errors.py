"""The one exception type users see: its message is the whole story, in one line."""


class ImgclassError(Exception):
    """A problem the user can fix; the CLI prints `imgclass: <message>` and exits 1, no traceback.

    Messages say what went wrong, where, and what to do, e.g.
    ``ImgclassError("cat.jpg: not found; check the path")``.
    """
