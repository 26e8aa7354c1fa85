"""What the commands' flags share: argparse types, the lists that `--help` shows, and checks that
a path can be written before anything runs."""

import argparse
import os
import tempfile

from fnnet import datasets


def ints(text):
    """'2,4,1' or '2' → [2, 4, 1] / [2] (argparse type)."""
    try:
        return [int(part) for part in text.split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 2,4,1, got {text!r}") from None


def layers(text):
    """A `--layers` spec, or `@FILE` holding one (over several lines if need be, `#` starting a
    comment): its text without whitespace (argparse type; `fnnet.cli.spec` parses it)."""
    if not text.startswith("@"):
        return "".join(text.split())
    try:
        with open(text[1:], encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise argparse.ArgumentTypeError(f"cannot read the spec file {text[1:]!r} "
                                         f"({getattr(e, 'strerror', None) or e})") from None
    return "".join("".join(line.split("#", 1)[0] for line in lines).split())


def dataset_name(text):
    """A name in datasets.NAMES, "text", or a .npz/.csv path (argparse type)."""
    if text in (*datasets.NAMES, "text") or text.endswith(datasets.FILE_SUFFIXES):
        return text
    raise argparse.ArgumentTypeError(f"unknown dataset {text!r}; expected one of {', '.join(datasets.NAMES)}, "
                                     f"text, or a {' or '.join(datasets.FILE_SUFFIXES)} file")


def names(entries) -> str:
    """'relu, tanh, ...': the names of registry entries, for `--help`."""
    return ", ".join(entry.name for entry in entries)


def check_writable_dir(flag, path):
    """Create directory `path` if needed and prove a file can be written in it; ValueError naming `flag`."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a file; expected a directory")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot write there ({e.strerror or e})") from None
