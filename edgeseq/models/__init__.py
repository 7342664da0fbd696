"""Model families. Importing this package registers every family, its converter and its configs."""

from edgeseq.models import aaren, continual, mamba, rnn  # noqa: F401
