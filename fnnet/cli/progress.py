"""Training progress on stderr: a tqdm bar on a terminal, plain lines in a log.

On a terminal with `tqdm` installed (`pip install 'fnnet[progress]'`) one bar redraws in place,
as wide as the terminal, with elapsed time, rate and ETA; anywhere else (a log file, a pipe,
no tqdm) each update is one line of at most 80 characters. Either way something is printed
before the first chunk of epochs, which includes the compilation.
"""

import shutil
import sys
import time


class Progress:
    """`update(epoch, history)` after each chunk of epochs; `close()` at the end.

    Args:
      start: the epoch training starts from (> 0 when resumed).
      total: the epoch it runs to.
      stream: where to write (default `sys.stderr`).
    """

    def __init__(self, start, total, stream=None):
        self.stream = sys.stderr if stream is None else stream
        self.start, self.total, self.began, self.first = start, total, time.perf_counter(), None
        self.bar = None
        if self.stream.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                width = shutil.get_terminal_size().columns
                self.bar = tqdm(total=total, initial=start, unit="ep", desc="compiling ", file=self.stream,
                                ncols=width, bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                                        "[{elapsed}<{remaining}, {rate_fmt}{postfix}]")
                return
        print(f"epoch {start}/{total}  compiling (the first update includes it)", file=self.stream, flush=True)

    def update(self, epoch, history):
        """After `epoch` epochs (counting from 0, the resumed ones included)."""
        now = time.perf_counter()
        if self.first is None:
            self.first = (epoch, now)  # the rate excludes the first chunk, which compiled
        if self.bar is not None:
            self.bar.set_description("", refresh=False)
            self.bar.set_postfix_str(_metrics(history, short=True), refresh=False)
            self.bar.update(epoch - self.bar.n)
            return
        done, at = self.first
        rate = (epoch - done) / (now - at) if epoch > done else None
        eta = f", eta {(self.total - epoch) / rate:.0f} s" if rate else ""
        line = f"epoch {epoch}/{self.total}  {_metrics(history)}  ({now - self.began:.1f} s{eta})"
        print(line[:80], file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _metrics(history, short=False):
    """'loss 0.1234  val_loss 0.1301  val_acc 0.9611' from the last epoch of `history` (`short`: a bar's
    postfix, 'loss 0.123 val 0.130 acc 0.961')."""
    names = ({"loss": "loss", "val_loss": "val", "val_accuracy": "acc"} if short
             else {"loss": "loss", "val_loss": "val_loss", "val_accuracy": "val_acc"})
    return (" " if short else "  ").join(f"{names[k]} {history[k][-1]:{'.3g' if short else '.4g'}}"
                                         for k in names if k in history)
