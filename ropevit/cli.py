"""One-line errors for ropevit's command-line tools (``tools/*.py``).

A tool's ``main`` runs under :func:`run_tool`. Errors the project knows (bad config values, a
checkpoint that does not fit, a data set that contradicts its annotation file, an unsafe or corrupt
checkpoint, an output that would land on an input) are printed as one line::

    error: <what was wrong, naming the value and the file>; <the fix> (traceback: --debug)

and the tool exits 2 (1 for :class:`PartialFailure`: some inputs failed, the others were done). Any
other exception is a bug and keeps its traceback. ``--debug`` or ``ROPEVIT_DEBUG=1`` shows the
traceback of the known errors too.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NoReturn, Optional, Sequence

__all__ = ['ToolError', 'PartialFailure', 'OneLineArgumentParser', 'KeyValueAction', 'run_tool', 'exit_tool',
           'format_error', 'one_line', 'config_stage', 'debug_requested', 'DEBUG_ENV']

DEBUG_ENV = 'ROPEVIT_DEBUG'


class ToolError(Exception):
    """An error a tool explains in one line. ``exit_code`` 2: bad input (nothing was done)."""

    exit_code = 2


class PartialFailure(ToolError):
    """Some inputs failed and were named; the others were processed (exit 1)."""

    exit_code = 1


def debug_requested(argv: Sequence[str] = ()) -> bool:
    return '--debug' in argv or os.environ.get(DEBUG_ENV, '') not in ('', '0')


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (argparse prints the whole usage first) and which
    takes ``--debug``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument('--debug', action='store_true',
                          help=f'show the traceback of errors (also: {DEBUG_ENV}=1)')

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f'{self.prog}: error: {message} (see {self.prog} --help)\n')


def _dict_action() -> type:
    from mmengine.config import DictAction
    return DictAction


class KeyValueAction(argparse.Action):
    """``--cfg-options KEY=VALUE ...`` (MMEngine's ``DictAction`` parsing) that names an item without
    ``=`` instead of failing inside argparse with ``not enough values to unpack``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        for kv in values or ():
            key = kv.split('=', 1)[0]
            if '=' not in kv or not key or key != key.strip():
                raise argparse.ArgumentError(
                    self, f'{kv!r} is not KEY=VALUE; write e.g. model.backbone.drop_path_rate=0.2 or '
                          f'train_dataloader.batch_size=4')
        action = _dict_action()(self.option_strings, self.dest, nargs=self.nargs)
        action(parser, namespace, values, option_string)


# torch's advice to turn weights_only off would let a checkpoint run code: never pass it on.
_UNSAFE_ADVICE = re.compile(r'weights[_ ]only|trusted source|torch\.serialization', re.IGNORECASE)
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+')


def one_line(text: str) -> str:
    """Collapse a message to one line (newlines and runs of spaces become one space), leaving out
    every sentence of torch's advice about ``weights_only``."""
    text = re.sub(r'\s+', ' ', str(text)).strip()
    if _UNSAFE_ADVICE.search(text):
        text = ' '.join(s for s in _SENTENCE_END.split(text) if not _UNSAFE_ADVICE.search(s))
    return text.strip()


_KNOWN = {'ropevit.checkpoint.common': ('CheckpointMismatchError',),
          'ropevit.checkpoint.io': ('UnsafeCheckpointError',),
          'ropevit.fileio': ('OutputOverInputError',),
          'ropevit.datacheck': ('DatasetNotFoundError', 'DataCheckError')}


def _known_types() -> tuple[type, ...]:
    """The project's error types; a module not imported yet cannot have raised its error, so only
    imported ones are looked up (an error path does not pay for importing torch or mmengine)."""
    found: list[type] = [ToolError]
    for module, names in _KNOWN.items():
        mod = sys.modules.get(module)
        found += [getattr(mod, n) for n in names if mod is not None and hasattr(mod, n)]
    return tuple(found)


def format_error(e: BaseException) -> Optional[str]:
    """The one-line message for a known error, or None for an unknown one (a bug: keep the traceback)."""
    if isinstance(e, _known_types()):
        return one_line(str(e))
    text = str(e)
    marker = '(truncated or not a torch checkpoint)'
    if isinstance(e, RuntimeError) and marker in text:
        head, _, reason = text.partition(marker)
        reason = one_line(reason.lstrip(': '))
        return (one_line(head) + ' ' + marker + (f': {reason}' if reason else '')
                + '; give a complete checkpoint written by torch.save (tools/train.py writes them)')
    if isinstance(e, FileNotFoundError) and text.startswith('checkpoint not found'):
        return one_line(text)
    return None


@contextmanager
def config_stage(config: str, what: str = 'reading') -> Iterator[None]:
    """Errors raised while a config is read or its model, hooks and loops are built are about the
    config's values: name the config file (MMEngine prefixes the class that refused the value)."""
    try:
        yield
    except SyntaxError as e:
        filename = e.filename if e.filename and not e.filename.startswith('<') else config
        where = filename + (f', line {e.lineno}' if e.lineno else '')
        msg = e.msg or str(e)
        raise ToolError(f'config {where}: Python syntax error: {one_line(msg)}; fix the file') from e
    except ImportError as e:
        raise ToolError(f'config {config}: {what} it failed to import {e.name or ""!s}: {one_line(str(e))}; '
                        f'check custom_imports and that the package is installed') from e
    except (ValueError, TypeError, KeyError, AssertionError) as e:
        if format_error(e) is not None:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise ToolError(f'config {config}: {what} it failed: {one_line(str(msg)) or type(e).__name__}') from e


def exit_tool(code: int) -> NoReturn:
    """``sys.exit(code)``; a process of a distributed run first leaves its process group and then exits
    without the interpreter's teardown.

    A gloo (CPU) DDP process that finishes normally can abort after Python's finalisation ("terminate
    called without an active exception", SIGABRT, no Python frame left: a communication thread still
    joinable when its C++ owner is destroyed at exit; about 1 run in 10-30 on the 2-core CI machine).
    torchrun then reports the finished run as failed and stops the other ranks. So after the work
    (a barrier when it succeeded, so no rank leaves while another still communicates) the group is
    destroyed, logs and streams are flushed, and the process ends with ``os._exit(code)``. Outside a
    distributed run this is ``sys.exit(code)``.
    """
    dist = sys.modules.get('torch.distributed')
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        sys.exit(code)
    import logging
    try:
        if code == 0:
            dist.barrier()
        dist.destroy_process_group()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_tool(main: Callable[[Optional[Sequence[str]]], Any], argv: Optional[Sequence[str]] = None) -> int:
    """Run ``main(argv)``; print known errors as one line and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        result = main(argv)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as e:  # noqa: BLE001  (unknown ones are re-raised below)
        message = format_error(e)
        if message is None or debug_requested(argv):
            raise
        print(f'error: {message} (traceback: --debug)', file=sys.stderr, flush=True)
        return getattr(e, 'exit_code', 2)
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
