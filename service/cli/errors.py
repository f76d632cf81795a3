"""One-line errors for the command line: a refusal exits 1, a wrong command line exits 2."""
import contextlib

import click


class CommandError(click.ClickException):
    """A refusal or failure, told on one line of stderr with exit status 1."""

    def __init__(self, message):
        super().__init__(" ".join(str(message).split()))


class OneLineGroup(click.Group):
    """A group whose usage errors are one line too, naming the help to read instead of printing it."""

    def make_context(self, *args, **kwargs):
        with one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx):
        with one_line_usage_errors():
            return super().invoke(ctx)


@contextlib.contextmanager
def one_line_usage_errors():
    """Re-raise a UsageError without its context, so click prints only its message."""
    try:
        yield
    except click.UsageError as error:
        if error.ctx is None or isinstance(error, getattr(click.exceptions, "NoArgsIsHelpError", ())):
            raise
        message = " ".join(error.format_message().split())
        raise click.UsageError(f"{message} (see '{error.ctx.command_path} --help')") from None


def describe(messages, names=None):
    """Marshmallow's error messages on one line: 'field: why; other: why'."""
    names = names or {}

    def walk(value, path):
        if isinstance(value, dict):
            for key, inner in value.items():
                field = names.get(key, str(key)) if not path else str(key)  # names: top-level fields
                yield from walk(inner, path if key == "_schema" else [*path, field])
        elif isinstance(value, (list, tuple)):
            for inner in value:
                yield from walk(inner, path)
        else:
            yield f"{'.'.join(path)}: {value}" if path else str(value)

    return "; ".join(walk(messages, []))
