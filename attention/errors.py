"""The one exception type the pack raises for user-facing problems."""


class CrossFrameError(ValueError):
    """A misuse the user can fix: the message names the node (or call) and the fix.

    Subclassing ValueError keeps it catchable by callers that only know the builtin, and ComfyUI shows the
    message verbatim in its error dialog.
    """
