"""One exception type for every problem a user can fix: bad input files, bad config, bad methods.

Each message is a single line that names the file (and key) and what is wrong, so that a
Snakemake log shows the cause without a traceback hunt.
"""


class EmsrError(Exception):
    """A user-fixable error; ``str(err)`` is one line naming the file/key and the problem."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
