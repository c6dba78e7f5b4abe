"""What Fabric, the Trainer and transformers' Trainer remove, in lines: per feature, the lines of code that
implement it in vanilla/, fabric/, lightning/ and hf_trainer/ (non-blank lines that are not comments or docstrings).

Attribution is by file and, inside a file, by the function or class a line belongs to or the call it is part
of (the maps below): a line takes the feature of the innermost mapped definition, call, attribute or name around
it, else its file's feature; in the entry files (train.py) an unmapped line is wiring. A flag of `Trainer(...)`,
`Fabric(...)` or `Seq2SeqTrainingArguments(...)` counts towards the feature it switches on. The shared/ layer
(data, model, metrics, CLI) is used by all and counted by none, except the helpers a trainer needs because its
framework lacks them (exact resume, reading a checkpoint with one-line errors, metrics.csv's rows on resume),
which count on each side that uses them. The framework-free vanilla/ modules the Fabric trainer imports (early
stopping, top-k bookkeeping, the search) count on Fabric's side too, marked as reused: a Fabric user writes or
brings them; so does the hparams.yaml writer hf_trainer/ imports.

hf_trainer/ does not run the batch-size search: hf_trainer/train.py's `not_yet` refuses it with a one-line error,
and its lines count as wiring. Its row for it (NOT_YET) holds nothing, and the tables say "refused" where a
removal would stand: it removes nothing there, and its total's removal leaves that row out.
Three of its features are built in part (PARTLY): fewer lines there partly mean less done, and the tables say so.

    python bench/count_lines.py           # the table
    python bench/count_lines.py --show    # every counted line with its feature
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import sys
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FEATURES = ("loop", "early stopping", "checkpointing + resume", "data parallel / DDP", "batch-size search",
            "precision", "logging", "test phase", "wiring")
SIDES = ("vanilla", "fabric", "lightning", "hf_trainer")  # the ladder: by hand, Fabric, the Trainer, transformers'
LOOP, STOP, CKPT, DDP, SEARCH, PRECISION, LOGGING, TEST, WIRING = FEATURES
# Features a rung refuses rather than implements so far: no table says it removes them.
NOT_YET: dict[str, tuple[str, ...]] = {"hf_trainer": (SEARCH,)}
# Features a rung implements in part so far, with what it lacks: its removal there comes with that note.
PARTLY: dict[str, dict[str, str]] = {"hf_trainer": {
    STOP: "--min-delta refused",
    CKPT: "not a top-k: the best and the latest kept; --resume PATH refused",
    DDP: "torchrun on one node; no resume under DDP",
}}

# Files: their feature, then what inside them belongs to another: a definition (`name` or `Class.method`), a
# call (`name()`), an attribute (`.name`), a name, or a constructor's flag (`Trainer(name=)`; `scope.Call(name=)`:
# that flag only in that definition's calls, before the unscoped key).
FILES: dict[str, tuple[str, dict[str, str]]] = {
    "vanilla/train.py": (WIRING, {
        "configure_optimizers": LOOP, "Optimization()": LOOP, "FitLoop()": LOOP, "run()": LOOP,
        "EarlyStopping()": STOP, ".stop_reason": STOP,
        "ModelCheckpoint()": CKPT, "resolve_resume_path()": CKPT, "read_resume_checkpoint()": CKPT,
        "restore_checkpoint()": CKPT, "saver()": CKPT,
        "init_process_group()": DDP, "barrier()": DDP, "run_ranks()": DDP, "connect()": DDP,
        "resolve_hardware()": DDP, "detect()": DDP, "check_num_nodes()": DDP, "end_with_rank_zero()": DDP,
        "search_batch_size": SEARCH, "search_batch_size()": SEARCH,
        "Precision()": PRECISION,
        "open_loggers()": LOGGING, "ProgressBar()": LOGGING, "close()": LOGGING,
        "test_phase": TEST, "test_phase()": TEST}),
    "vanilla/fit_loop.py": (LOOP, {
        "FitLoop.state_dict": CKPT, "FitLoop.load_state_dict": CKPT, "FitLoop._restore_pending_rng": CKPT,
        "FitLoop._stop_if_signalled": CKPT, "FitLoop.save_last": CKPT, "FitLoop.restore_rng_at_resume": CKPT,
        "save_last()": CKPT, "_stop_if_signalled()": CKPT, "_restore_pending_rng()": CKPT,
        "catching_stop_signals()": CKPT, "on_validation_epoch_end()": CKPT, ".batches_trained": CKPT,
        ".logged_rows": CKPT, "check()": STOP, "reduce_any()": DDP, "all_reduce_sum()": DDP,
        "forward_context()": PRECISION,
        "log_metrics()": LOGGING, "start_epoch()": LOGGING, "advance()": LOGGING, "end_epoch()": LOGGING}),
    "vanilla/optimization.py": (LOOP, {"forward_context()": PRECISION, "backward()": PRECISION,
                                       "unscale_gradients()": PRECISION, ".no_sync": DDP, "no_sync()": DDP}),
    "vanilla/seed.py": (LOOP, {"seed_everything": WIRING}),
    "vanilla/early_stopping.py": (STOP, {}),
    "vanilla/model_checkpoint.py": (CKPT, {}),
    "vanilla/checkpoint_io.py": (CKPT, {}),
    "vanilla/checkpoint_connector.py": (CKPT, {}),
    "vanilla/signal_connector.py": (CKPT, {}),
    "vanilla/accelerator.py": (DDP, {}),
    "vanilla/strategy.py": (DDP, {}),
    "vanilla/data_parallel.py": (DDP, {}),
    "vanilla/ddp.py": (DDP, {}),
    "vanilla/cluster_environment.py": (DDP, {}),
    "vanilla/data_connector.py": (WIRING, {"DataConnector._sampler": DDP, "_sampler()": DDP}),
    "vanilla/batch_size_finder.py": (SEARCH, {}),
    "vanilla/precision.py": (PRECISION, {}),
    "vanilla/loggers.py": (LOGGING, {"CSVLogger.truncate": CKPT, "truncate()": CKPT}),
    "vanilla/progress_bar.py": (LOGGING, {}),
    "vanilla/evaluation_loop.py": (TEST, {}),
    # The Lightning trainer's side counts what lightning/train.py uses of plain_lightning.py: not plain's own main,
    # its step checkpoints (exact resume writes last.ckpt instead), or the loaders train.py overrides.
    "lightning/plain_lightning.py": (WIRING, {
        "main": None, "step_checkpoints": None, "QGDataModule.train_dataloader": None,
        "QGDataModule.test_dataloader": None,
        "QGModule.training_step": LOOP, "QGModule.validation_step": LOOP, "QGModule.configure_optimizers": LOOP,
        "QGDataModule.val_dataloader": LOOP, "QGDataModule.loader": LOOP,
        "EarlyStopping()": STOP, "ModelCheckpoint()": CKPT,
        "Tuner()": SEARCH, "scale_batch_size()": SEARCH,
        "loggers": LOGGING, "CSVLogger()": LOGGING, "TensorBoardLogger()": LOGGING, "log()": LOGGING,
        "MeanMetric()": LOGGING, ".train_loss": LOGGING,
        "QGModule.test_step": TEST, "test()": TEST, "write_test_report()": TEST,
        ".best_model_path": TEST, ".generated": TEST,
        "Trainer(max_epochs=)": LOOP, "Trainer(limit_train_batches=)": LOOP, "Trainer(accumulate_grad_batches=)": LOOP,
        "Trainer(gradient_clip_val=)": LOOP, "Trainer(accelerator=)": DDP, "Trainer(devices=)": DDP,
        "Trainer(num_nodes=)": DDP, "Trainer(strategy=)": DDP, "Trainer(precision=)": PRECISION,
        "Trainer(logger=)": LOGGING}),
    "lightning/train.py": (WIRING, {
        "ResumableQGDataModule.train_dataloader": CKPT, "ResumableQGDataModule.test_dataloader": TEST,
        "ResumableQGDataModule.__init__": DDP, "fit()": LOOP,
        ".stopping_reason_message": STOP,
        "callbacks()": CKPT, "exact_resume_callbacks()": CKPT,
        "tester": DDP, "tester()": DDP,
        "scale_batch_size": SEARCH, "scale_batch_size()": SEARCH, "refusing_the_search()": SEARCH,
        "test()": TEST, "in_test_order()": TEST, "write_test_report()": TEST, ".best_model_path": TEST,
        ".generated": TEST, "gather_from_every_rank()": TEST}),
    "lightning/exact_resume.py": (CKPT, {}),
    # transformers' Trainer runs the loop; what the job needs beyond it goes through its callbacks and a subclass.
    # not_yet (its refusals, DDP's among them) stays wiring: a refusal implements nothing.
    "hf_trainer/train.py": (WIRING, {
        "Seq2SeqTrainingArguments(num_train_epochs=)": LOOP,
        "Seq2SeqTrainingArguments(per_device_train_batch_size=)": LOOP,
        "Seq2SeqTrainingArguments(per_device_eval_batch_size=)": LOOP,
        "Seq2SeqTrainingArguments(gradient_accumulation_steps=)": LOOP,
        "Seq2SeqTrainingArguments(learning_rate=)": LOOP, "Seq2SeqTrainingArguments(weight_decay=)": LOOP,
        "Seq2SeqTrainingArguments(lr_scheduler_type=)": LOOP, "Seq2SeqTrainingArguments(warmup_steps=)": LOOP,
        "Seq2SeqTrainingArguments(max_grad_norm=)": LOOP, "Seq2SeqTrainingArguments(dataloader_num_workers=)": LOOP,
        "Seq2SeqTrainingArguments(eval_strategy=)": LOOP, "Seq2SeqTrainingArguments(batch_eval_metrics=)": LOOP,
        "Seq2SeqTrainingArguments(include_for_metrics=)": LOOP,
        "main.QGTrainer(train_dataset=)": LOOP, "main.QGTrainer(eval_dataset=)": LOOP, "DevLoss()": LOOP,
        "limit_train_batches": LOOP, "limit_train_batches()": LOOP, "train()": LOOP,
        "EarlyStopping()": STOP, "early_stopping": STOP, ".stopping_reason_message": STOP,
        "Seq2SeqTrainingArguments(output_dir=)": CKPT, "Seq2SeqTrainingArguments(save_strategy=)": CKPT,
        "Seq2SeqTrainingArguments(metric_for_best_model=)": CKPT,
        "Seq2SeqTrainingArguments(greater_is_better=)": CKPT, "Seq2SeqTrainingArguments(save_total_limit=)": CKPT,
        "Seq2SeqTrainingArguments(restore_callback_states_from_checkpoint=)": CKPT,
        "latest_checkpoint": CKPT, "latest_checkpoint()": CKPT, "resume_from": CKPT,
        "MidEpochResume()": CKPT, "mid_epoch_resume": CKPT, "catching_stop_signals()": CKPT,
        "check_resumable()": CKPT,
        "Seq2SeqTrainingArguments(use_cpu=)": DDP, "Seq2SeqTrainingArguments(accelerator_config=)": DDP,
        "Seq2SeqTrainingArguments(average_tokens_across_devices=)": DDP,
        "Seq2SeqTrainingArguments(ddp_find_unused_parameters=)": DDP, "Seq2SeqTrainingArguments(ddp_timeout=)": DDP,
        "Seq2SeqTrainingArguments(bf16=)": PRECISION, "precision_for()": PRECISION,
        "launcher()": DDP, "launcher_world_size()": DDP, "check_launcher_world()": DDP, "ddp": DDP,
        "built_and_reseeded": DDP, "built_and_reseeded()": DDP,
        "MeanMetric()": LOGGING, "MetricsFiles()": LOGGING, "main.QGTrainer(train_loss=)": LOGGING,
        "Seq2SeqTrainingArguments(logging_strategy=)": LOGGING, "Seq2SeqTrainingArguments(report_to=)": LOGGING,
        "Seq2SeqTrainingArguments(load_best_model_at_end=)": TEST, ".best_model_checkpoint": TEST,
        "test_phase": TEST, "test_phase()": TEST, "write_test_report()": TEST,
        # the tester's own arguments are the test phase's
        "test_phase.Seq2SeqTrainingArguments(output_dir=)": TEST,
        "test_phase.Seq2SeqTrainingArguments(per_device_eval_batch_size=)": TEST,
        "test_phase.Seq2SeqTrainingArguments(use_cpu=)": TEST,
        "test_phase.Seq2SeqTrainingArguments(report_to=)": TEST}),
    "hf_trainer/qg_trainer.py": (LOOP, {"QGTrainer.__init__": LOGGING, ".train_loss": LOGGING,
                                        "QGTrainer._get_train_sampler": DDP, "QGTrainer._get_eval_sampler": DDP,
                                        "QGTrainer._distributed_sampler": DDP, "QGTrainer.get_train_dataloader": DDP,
                                        "QGTrainer.get_eval_dataloader": DDP, "_unsharded": DDP,
                                        "QGTrainer.prediction_step": PRECISION}),
    "hf_trainer/dev_loss.py": (LOOP, {}),
    "hf_trainer/limit_train_batches.py": (LOOP, {}),
    "hf_trainer/early_stopping.py": (STOP, {}),
    "hf_trainer/mid_epoch_resume.py": (CKPT, {}),
    "hf_trainer/checkpoint_check.py": (CKPT, {}),
    "hf_trainer/metrics_files.py": (LOGGING, {"LoggedRows()": CKPT, ".resuming": CKPT, "log_again()": CKPT}),
    "fabric/train.py": (WIRING, {
        "loss_of": LOOP, "training_step": LOOP, "validate": LOOP, "sanity_check": LOOP, "clip_gradients()": LOOP,
        "FitLoop": LOOP, "FitLoop.resumable_loader": CKPT, "FitLoop.save_last": CKPT,
        "FitLoop.stop_if_signalled": CKPT, "FitLoop.restore_pending_rng": CKPT,
        "EarlyStopping": STOP, "check()": STOP, ".should_stop": STOP, ".stopping_reason_message": STOP,
        "ModelCheckpoint": CKPT, "save_checkpoint()": CKPT, "save_last()": CKPT, "on_validation_epoch_end()": CKPT,
        "stop_if_signalled()": CKPT, "restore_pending_rng()": CKPT, "pending_rng": CKPT, ".pending_rng": CKPT,
        "signals": CKPT, ".signals": CKPT, "catching_stop_signals()": CKPT, "every": CKPT,
        "resolve_resume_path()": CKPT, "read_resume_checkpoint()": CKPT, "resume()": CKPT, "to_resume": CKPT,
        "resume_path": CKPT, "LoggedRows()": CKPT, "log_again()": CKPT,
        "launch()": DDP, "setup()": DDP, "setup_dataloaders()": DDP, "no_backward_sync()": DDP,
        "all_reduce()": DDP, "reduce_boolean_decision()": DDP, "check_data_parallel()": DDP,
        "processes_fabric_started()": DDP,
        "search_batch_size": SEARCH, "search_batch_size()": SEARCH,
        "precision_for()": PRECISION, "backward()": PRECISION, "autocast()": PRECISION,
        "CSVLogger()": LOGGING, "TensorBoardLogger()": LOGGING, "log_dict()": LOGGING, "logger.save()": LOGGING,
        ".loggers": LOGGING, "tensorboard_logger": LOGGING, "log_dir": LOGGING,
        "save_hparams()": LOGGING, "finalize()": LOGGING, "ProgressBar()": LOGGING, "start_epoch()": LOGGING,
        "advance()": LOGGING, "end_epoch()": LOGGING,
        "test_phase": TEST, "test_phase()": TEST, ".best_model_path": TEST,
        "Fabric(accelerator=)": DDP, "Fabric(devices=)": DDP, "Fabric(strategy=)": DDP, "Fabric(num_nodes=)": DDP,
        "check_num_nodes()": DDP, "DDPStrategy()": DDP, "runs_ddp()": DDP, "end_with_rank_zero()": DDP,
        "SLURMEnvironment()": DDP, ".main_address": DDP, "detect()": DDP,
        "Fabric(precision=)": PRECISION, "Fabric(loggers=)": LOGGING,
        "check_devices()": DDP, "other_ranks_stopped_on_failure": DDP, "other_ranks_stopped_on_failure()": DDP}),
    "fabric/resume_state.py": (CKPT, {}),
    "fabric/private_api.py": (CKPT, {"processes_fabric_started": DDP}),
    "lightning/run_guard.py": (WIRING, {
        "RunGuard.strategy": DDP, "RunGuard.hardware": DDP, "RunGuard._check_data_parallel": DDP,
        "_check_data_parallel()": DDP, "RunGuard.refusing_the_search": SEARCH,
        "check_num_nodes()": DDP, "end_with_rank_zero()": DDP, "SLURMEnvironment()": DDP, ".main_address": DDP,
        "detect()": DDP, "SigtermEndsTheTest": CKPT, "_Checks.setup": CKPT, "_Checks.on_fit_start": LOOP,
        "_OneLineCheckpointIO": CKPT, "_OneLineCheckpointIO()": CKPT, "resolve_resume_path()": CKPT,
        "read_checkpoint()": CKPT, "check_resumable_by()": CKPT, "precision_for()": PRECISION,
        "check_devices()": DDP}),
}
# vanilla/'s framework-free modules the Fabric trainer (and hf_trainer/metrics_files.py) imports: counted on the
# importing side too (a feature None, in a file or a definition: not counted).
# In vanilla/loggers.py only save_hparams counts: its calls in open_loggers there are vanilla's own.
REUSED: dict[str, dict[str, tuple[str | None, dict[str, str | None]]]] = {"hf_trainer": {
    "vanilla/loggers.py": (None, {"save_hparams": LOGGING, "save_hparams()": None}),
    "vanilla/signal_connector.py": (CKPT, {}),
}, "fabric": {
    "vanilla/early_stopping.py": (STOP, {}),
    "vanilla/model_checkpoint.py": (CKPT, {}),
    "vanilla/batch_size_finder.py": (SEARCH, {"search_with_optimization": None}),
    "vanilla/data_parallel.py": (None, {"AutocastInReplicas": DDP, "_replica_autocast": DDP,
                                        "autocast_in_replicas": DDP}),
    "vanilla/signal_connector.py": (CKPT, {}),
    "vanilla/progress_bar.py": (LOGGING, {}),
    "vanilla/loggers.py": (None, {"save_hparams": LOGGING, "save_hparams()": None}),
    "vanilla/seed.py": (None, {"isolate_rng": LOOP}),
}}
# shared/ helpers that the first three trainers need and that neither framework has: counted on their sides (a
# file's feature None: only what is mapped in it counts).
SHARED: dict[str, tuple[str | None, dict[str, str]]] = {
    "shared/resumable_loader.py": (CKPT, {}),
    "shared/rng_state.py": (CKPT, {}),
    "shared/process_tree.py": (DDP, {}),
    "shared/checkpoint_file.py": (CKPT, {"model_weights": None}),  # model_weights: for the tests and make demo
    "shared/errors.py": (None, {"Interrupted": CKPT, "no_training_batches_error": LOOP}),
}

# shared/ helpers the two framework trainers need and their frameworks lack (vanilla does the same by hand in its
# own modules): counted on the Fabric and Trainer sides.
FRAMEWORK_SHARED: dict[str, tuple[str | None, dict[str, str]]] = {
    "shared/launcher.py": (None, {"check_launcher": DDP}),
    "shared/logged_rows.py": (CKPT, {}),
}

# shared/ helpers that vanilla and the Fabric trainer both need because each writes its own loop and checkpoint
# dict (the Trainer has its own): counted on those two sides.
OWN_LOOP_SHARED: dict[str, tuple[str | None, dict[str, str]]] = {
    "shared/loop_position.py": (LOOP, {"LoopPosition.state_dict": CKPT, "LoopPosition.load_state_dict": CKPT}),
    "shared/checkpoint_dict.py": (CKPT, {}),
}

# A side listed here counts, of the shared/ helpers, only these, with these maps (not the groups above): what it
# imports. hf_trainer/ resumes through the Trainer's own checkpoints and refuses DDP (no resumable loader,
# checkpoint file or process tree of ours), and has no loop of its own: it needs metrics.csv's rows again on resume
# (metrics_files.py), the random generators at an epoch's start and the one-line errors of an interrupted or
# unusable checkpoint (mid_epoch_resume.py), and Lightning's count of batches for --limit-train-batches.
SHARED_USED_BY: dict[str, dict[str, tuple[str | None, dict[str, str | None]]]] = {"hf_trainer": {
    "shared/logged_rows.py": (CKPT, {"LoggedRows.put_back": None}),  # put_back: for a refused checkpoint, not here
    "shared/loop_position.py": (None, {"num_train_batches": LOOP}),
    "shared/errors.py": (None, {"no_training_batches_error": LOOP, "Interrupted": CKPT}),
    "shared/rng_state.py": (None, {"collect_rng_states": CKPT, "restore_rng_states": CKPT}),
}}


def docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str, tree: ast.AST) -> set[int]:
    """Line numbers holding a token that is code (not a comment, not layout, not a docstring)."""
    skip = docstring_lines(tree)
    layout = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
              tokenize.ENDMARKER, tokenize.ENCODING}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in layout:
            lines.update(n for n in range(token.start[0], token.end[0] + 1) if n not in skip)
    return lines


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def mapped_spans(tree: ast.AST, names: dict[str, str | None]) -> list[tuple[int, int, str | None]]:
    """(first line, last line, feature) of every definition, call, attribute, name or constructor flag in
    `names`."""
    spans = []

    def visit(node: ast.AST, scope: str) -> None:
        for child in ast.iter_child_nodes(node):
            key, inner = None, scope
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
                key = inner if inner in names else child.name
            elif isinstance(child, ast.Call):
                called = _called_name(child)
                key = f"{called}()"
                if isinstance(child.func, ast.Attribute) and isinstance(child.func.value, ast.Name) \
                        and f"{child.func.value.id}.{called}()" in names:
                    key = f"{child.func.value.id}.{called}()"  # logger.save() is not fabric.save()
                for kw in child.keywords:
                    flag = next((flag for flag in (f"{scope}.{called}({kw.arg}=)", f"{called}({kw.arg}=)")
                                 if flag in names), None)  # this definition's own map of the flag first
                    if flag is not None:
                        spans.append((kw.value.lineno, kw.value.end_lineno, names[flag]))
            elif isinstance(child, ast.Attribute) and not isinstance(child.ctx, ast.Store):
                key = f".{child.attr}"
            elif isinstance(child, ast.Name):
                key = child.id
            if key in names:
                spans.append((child.lineno, child.end_lineno, names[key]))
            visit(child, inner)

    visit(tree, "")
    return spans


def count_file(relative: str, side: str | None = None) -> list[tuple[int, str, str]]:
    """(line number, feature, text) of every counted line of one file (as `side` counts it, for a reused one)."""
    default, names = (REUSED.get(side, {}).get(relative) or SHARED_USED_BY.get(side, {}).get(relative)
                      or FILES.get(relative) or SHARED.get(relative) or OWN_LOOP_SHARED.get(relative)
                      or FRAMEWORK_SHARED[relative])
    source = (REPO / relative).read_text(encoding="utf-8")
    tree = ast.parse(source)
    spans = mapped_spans(tree, names)
    result = []
    lines = source.splitlines()
    for number in sorted(code_lines(source, tree)):
        covering = [(last - first, -first, feature) for first, last, feature in spans if first <= number <= last]
        feature = min(covering, key=lambda span: span[:2])[2] if covering else default
        if feature is not None:
            result.append((number, feature, lines[number - 1]))
    return result


def files_of(side: str) -> list[str]:
    """The files counted on `side`: its own, the shared helpers (the frameworks': theirs too; the hand-written
    loops': theirs; hf_trainer: those it uses), and the reused vanilla/ modules."""
    if side in SHARED_USED_BY:
        shared = list(SHARED_USED_BY[side])
    else:
        shared = (list(SHARED) + (list(FRAMEWORK_SHARED) if side != "vanilla" else [])
                  + (list(OWN_LOOP_SHARED) if side != "lightning" else []))
    return [path for path in FILES if path.startswith(f"{side}/")] + shared + list(REUSED.get(side, {}))


def is_reused(side: str, relative: str) -> bool:
    return relative in REUSED.get(side, {})


def count() -> dict[str, dict[str, int]]:
    """{feature: {side: lines}}, plus a "total" row."""
    table = {feature: dict.fromkeys(SIDES, 0) for feature in FEATURES}
    for side in SIDES:
        for relative in files_of(side):
            for _, feature, _ in count_file(relative, side):
                table[feature][side] += 1
    table["total"] = {side: sum(row[side] for row in table.values()) for side in SIDES}
    return table


def check_every_file_is_mapped() -> None:
    for side in SIDES:
        for path in sorted((REPO / side).glob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative not in FILES and path.read_text().strip():
                raise SystemExit(f"error: {relative} is not assigned a feature in bench/count_lines.py")
    maps = [*FILES.items(), *SHARED.items(), *FRAMEWORK_SHARED.items(), *OWN_LOOP_SHARED.items(),
            *(entry for side_maps in (*REUSED.values(), *SHARED_USED_BY.values()) for entry in side_maps.items())]
    for relative, (default, names) in maps:
        if not (REPO / relative).is_file():
            raise SystemExit(f"error: bench/count_lines.py maps {relative}, which does not exist")
        unknown = {default, *names.values()} - set(FEATURES) - {None}
        if unknown:
            raise SystemExit(f"error: bench/count_lines.py: {relative}: unknown feature(s) {sorted(unknown)}")


def removed(table: dict[str, dict[str, int]], feature: str, side: str) -> str:
    """The lines of vanilla/ that `side` does without for `feature` ("total": all features), and their share.
    "refused" for a feature the side refuses (NOT_YET), and its total leaves those rows out on both sides; a
    feature it builds in part (PARTLY) says so."""
    refused = NOT_YET.get(side, ())
    if feature in refused:
        return "refused (not yet)"
    if feature == "total" and refused:
        base = table["total"]["vanilla"] - sum(table[f]["vanilla"] for f in refused)
        lines = base - (table["total"][side] - sum(table[f][side] for f in refused))
        return f"{lines} ({lines / base:.0%}) of {base}, refused rows left out"
    lines = table[feature]["vanilla"] - table[feature][side]
    text = f"{lines} ({lines / table[feature]['vanilla']:.0%})" if table[feature]["vanilla"] else str(lines)
    return text + (", built in part" if feature in PARTLY.get(side, {}) else "")


def caveats() -> str:
    """What the tables' "refused" and "built in part" mean, rung by rung."""
    notes = []
    for side in SIDES:
        refused, partly = NOT_YET.get(side, ()), PARTLY.get(side, {})
        if refused:
            named = ", ".join(refused[:-1]) + f" and {refused[-1]}" if len(refused) > 1 else refused[0]
            rows, them = ("those rows", "them") if len(refused) > 1 else ("that row", "it")
            notes.append(f"{side}/ refuses {named} so far, with a one-line error (counted as wiring): "
                         f"{rows} hold{'s' if len(refused) == 1 else ''} what it has for {them}, not an "
                         f"implementation, and its total's removal leaves {them} out.")
        if partly:
            notes.append(f"{side}/ builds in part: " + "; ".join(f"{f} ({why})" for f, why in partly.items())
                         + ": fewer lines there partly mean less done.")
    return " ".join(notes)


REMOVES = {"fabric": "Fabric removes", "lightning": "the Trainer removes",
           "hf_trainer": "the transformers Trainer removes"}  # the tables' removal columns, by side


def markdown(table: dict[str, dict[str, int]]) -> str:
    lines = ["| feature | " + " | ".join(f"{side}/" for side in SIDES) + " | " + " | ".join(REMOVES.values()) + " |",
             "|---|" + "---:|" * (len(SIDES) + len(REMOVES))]
    for feature, row in table.items():
        name = f"**{feature}**" if feature == "total" else feature
        lines.append(f"| {name} | " + " | ".join(str(row[side]) for side in SIDES) + " | "
                     + " | ".join(removed(table, feature, side) for side in REMOVES) + " |")
    return "\n".join(lines) + (f"\n\n{caveats()}" if caveats() else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--show", action="store_true", help="print every counted line with its feature")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    args = parser.parse_args(argv)
    check_every_file_is_mapped()
    if args.show:
        for side in SIDES:
            for relative in files_of(side):
                reused = " (reused)" if is_reused(side, relative) else ""
                for number, feature, text in count_file(relative, side):
                    print(f"{side:<9} {relative}{reused}:{number:<4} {feature:<24} {text}")
    table = count()
    print(json.dumps(table, indent=2) if args.json else markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
