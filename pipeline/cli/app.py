"""The `pipeline` command: the one module that puts every command group together. Each has --help with examples."""

from __future__ import annotations

import typer

from pipeline.cli import cluster, outputs, tools
from pipeline.cli.manifest import manifest_app
from pipeline.cli.run import run_app

app = typer.Typer(help="VSSFlow data pipeline and trainer: extract -> synth-mix -> pretrain -> finetune -> generate.",
                  no_args_is_help=True, add_completion=False, rich_markup_mode="rich")

app.add_typer(run_app, name="run")
app.add_typer(manifest_app, name="manifest", help="Build manifests from corpus layouts; validate them.")
app.add_typer(tools.mix_app, name="mix")
app.command("inspect", epilog=tools.INSPECT_EPILOG)(tools.inspect_cmd)
app.command("sample-corpus", epilog=tools.SAMPLE_CORPUS_EPILOG)(tools.sample_corpus_cmd)
app.command("make-test-models", epilog=tools.MAKE_TEST_MODELS_EPILOG)(tools.make_test_models_cmd)
app.command("demo", epilog=tools.DEMO_EPILOG)(tools.demo_cmd)
app.command("export", epilog=outputs.EXPORT_EPILOG)(outputs.export_cmd)
app.command("card", epilog=outputs.CARD_EPILOG)(outputs.card_cmd)
app.add_typer(outputs.models_app, name="models")
run_app.command("generate-batch", epilog=outputs.GENERATE_BATCH_EPILOG)(outputs.generate_batch_cmd)
run_app.command("evaluate", epilog=outputs.EVALUATE_EPILOG)(outputs.evaluate_cmd)

app.command("submit", context_settings=cluster.PASS_THROUGH, epilog=cluster.SUBMIT_EPILOG)(cluster.submit_cmd)
app.add_typer(cluster.jobs_app, name="jobs")
app.add_typer(cluster.schedule_app, name="schedule")
app.command("scheduler", epilog=cluster.SCHEDULER_EPILOG)(cluster.scheduler_cmd)
app.command("status", epilog=cluster.STATUS_EPILOG)(cluster.status_cmd)


def main() -> None:  # the console script `pipeline`
    app()
