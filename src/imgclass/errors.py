"""The one exception type users see: its message is the whole story, in one line."""


class ImgclassError(Exception):
    """A problem the user can fix; the CLI prints `imgclass: <message>` and exits 1, no traceback.

    Messages say what went wrong, where, and what to do, e.g.
    ``ImgclassError("cat.jpg: not found; check the path")``.
    """


def first_line(e: BaseException, limit: int = 200) -> str:
    """A library exception in a few words for an ImgclassError message: its first line, or its
    type's name when it has no message (torch.load raises a bare EOFError on an empty file)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:limit]
