"""The `opensora` command: the Typer app and `main()`, which maps errors to one line and an exit code.

Exit codes: 0 success, 1 bad input (a file, a line, a field), 2 usage error (unknown option or choice,
missing argument, options that do not go together), 130 interrupted.
"""

from __future__ import annotations

import sys

import typer

from opensora_cli import __version__
from opensora_cli.cli import (
    demo_data,
    encode_prompts,
    init_model,
    lora,
    mask_preview,
    sample,
    train,
    train_vae,
    validate,
)
from opensora_cli.cli.common import state

app = typer.Typer(
    name="opensora",
    help="Conditioned video generation with Open-Sora Plan v1.3 (image-to-video, transition, continuation, "
    "inpainting).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's help layout instead of rich's: rich's option table cuts long names on narrow terminals
    # ("--guidance-sca…", and worse under `train`) and reads the "[default: ...]" in our help texts as markup
    # tags, dropping them. click's puts the help under a name too long for its column; --help skips rich too.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _show_version(value: bool) -> None:
    if value:
        print(f"opensora-cli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More detail; tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Conditioned video generation with Open-Sora Plan v1.3."""
    state.verbose = verbose


app.command("validate-inputs")(validate.validate_inputs_command)
app.command("mask-preview")(mask_preview.mask_preview_command)
app.command("sample")(sample.sample_command)
app.command("encode-prompts")(encode_prompts.encode_prompts_command)
app.command("train")(train.train_command)
app.command("make-demo-data")(demo_data.make_demo_data_command)
app.command("train-vae")(train_vae.train_vae_command)
app.command("init-model")(init_model.init_model_command)
app.add_typer(lora.lora_app, name="lora")


def _quiet_torchao_import() -> None:
    """With torchao installed (the [quant] extra), diffusers and transformers import it when a model loads, and
    the import logs a warning for each optional CUDA kernel library missing (every CPU machine), torch one for
    each of its enums, and diffusers one for tensor classes torchao 0.18 moved: noise on every run, not
    problems. Only these loggers, and only their warnings (errors still show)."""
    import logging

    for name in ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script passes it to sys.exit)."""
    from opensora_cli.errors import Interrupted, OpenSoraError

    state.verbose = False
    state.argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_torchao_import()
    try:
        result = app(args=argv, prog_name="opensora", standalone_mode=False)
    except typer.TyperException as exc:  # what Typer's parser raises (its click's errors derive from it)
        if exc.exit_code != 2:  # not a usage error: e.g. a file option that could not be opened
            print(f"Error: {exc.format_message()}", file=sys.stderr)
            return exc.exit_code
        message = exc.format_message().replace("Value error, ", "")
        if message:
            ctx = getattr(exc, "ctx", None)  # usage errors know the (sub)command they belong to
            where = ctx.command_path if ctx is not None else "opensora"
            print(f"Error: {message} (see '{where} --help')", file=sys.stderr)
        return 2
    except (typer.Abort, KeyboardInterrupt):
        print("Interrupted.", file=sys.stderr)
        return 130
    except Interrupted as exc:  # a service that knows what was done says so
        print(f"Interrupted: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:
        if state.verbose:
            import traceback

            traceback.print_exc()
        if isinstance(exc, OpenSoraError):
            print(f"Error: {exc}", file=sys.stderr)
            return exc.exit_code
        # A bug of ours: one line, the traceback on request.
        print(f"Internal error: {type(exc).__name__}: {exc} (rerun with --verbose for the traceback, and please "
              "report it)", file=sys.stderr)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
