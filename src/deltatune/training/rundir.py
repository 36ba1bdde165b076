"""The run directory: create it, save the resolved config, refuse to clobber a previous run.

    run_dir = prepare_run_dir(cfg, resume=False)   # RUN_DIR with config.yaml written

A run dir is "finished" once its `adapter/` exists (the recipe writes it last but one, before
`eval.json`). Starting a run in a dir that already holds a run is an error unless `--resume`
is given (continue from its latest checkpoint) or the user deletes the folder.
"""

from __future__ import annotations

from pathlib import Path

from deltatune.config import dump_config
from deltatune.errors import DeltatuneError


def is_finished(run_dir: Path) -> bool:
    return (Path(run_dir) / "adapter").is_dir()


def prepare_run_dir(cfg, resume: bool = False) -> Path:
    """Create (or, with resume, reopen) `cfg.output.dir` and write `config.yaml` into it (rank 0
    of a multi-process run; the others wait for it)."""
    from deltatune.training.distributed import current

    return current().main_first(lambda: _prepare(cfg, resume) if current().is_main else Path(cfg.output.dir))


def _prepare(cfg, resume: bool) -> Path:
    run_dir = Path(cfg.output.dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise DeltatuneError(f"output.dir {run_dir} exists and is a file; choose another output.dir")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not resume:
        if is_finished(run_dir):
            what = "holds a finished run"
        elif (run_dir / "config.yaml").exists():
            what = "holds an unfinished run"
        else:
            what = "is not empty (and is not a deltatune run dir)"
        raise DeltatuneError(
            f"output.dir {run_dir} {what}. Add --resume to continue it from its latest "
            f"checkpoint, delete the folder (rm -r {run_dir}), or set output.dir=... to a new path."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_config(cfg, run_dir / "config.yaml")
    return run_dir
