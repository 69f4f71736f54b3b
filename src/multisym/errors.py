"""The base of every error a user can act on (a bad config, a missing dataset
root, a corrupt file): the CLI prints its message, which names what is wrong
and what to do, without a traceback, and exits with status 2."""


class UserError(Exception):
    """An error whose message tells the user what to fix."""


class ConfigError(UserError, ValueError):
    """A configuration that does not satisfy the schema or the workflow's rules."""
