"""Question generation on SQuAD, trained with transformers' Seq2SeqTrainer (accelerate underneath): the same job as
vanilla/train.py, fabric/train.py and lightning/train.py, written as transformers' documentation and its
summarization example teach it: `Seq2SeqTrainingArguments`, a `Seq2SeqTrainer`, `EarlyStoppingCallback` with
`load_best_model_at_end`, then `predict` with `predict_with_generate` on the best model.

Where the job needs what the Trainer does otherwise, the modules beside this file add it through the Trainer's
documented extension points: `qg_trainer.py` (a subclass: the rungs' optimizer, and the loss divided for gradient
accumulation as Lightning divides it), `dev_loss.py` (dev_loss summed as the other rungs sum it, a
`compute_metrics`), `metrics_files.py` (metrics.csv, TensorBoard and hparams.yaml, a `TrainerCallback`),
`mid_epoch_resume.py` (step checkpoints, Ctrl-C and SIGTERM, and an exact resume inside an epoch, a
`TrainerCallback`).
Run from the repository root: `python hf_trainer/train.py --help` (the same command line as every trainer here).
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

# As in vanilla/train.py: the repository root on the path instead of this folder, so that `shared` and `vanilla`
# import as packages; this folder goes last, for the modules beside this file.
HERE = Path(__file__).resolve().parent
if sys.path[0] in ("", str(HERE)):
    sys.path[0] = str(HERE.parent)
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

import torch
from checkpoint_check import check_resumable
from dev_loss import DevLoss
from early_stopping import EarlyStopping
from limit_train_batches import LimitTrainBatches
from metrics_files import MetricsFiles
from mid_epoch_resume import MidEpochResume
from qg_trainer import QGTrainer
from torchmetrics import MeanMetric
from transformers import Seq2SeqTrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from shared.cli import parse_args
from shared.data import PadCollator
from shared.devices import check_data_parallel, precision_for
from shared.entry_point import exit_on_user_error
from shared.errors import UserError
from shared.export import export_pretrained
from shared.launcher import check_launcher_world, launcher, launcher_world_size
from shared.loop_position import num_train_batches
from shared.pipeline import make_model, prepare_data
from shared.predictions import write_test_report
from shared.run_dir import choose_run_directory, prepare_output_dir
from shared.run_settings import resolve_settings
from shared.summary import end_lines, start_line

PROG = "hf_trainer/train.py"
TRAINER = "hf_trainer"  # its runs go to runs/hf_trainer/version_N unless told otherwise


def not_yet(args) -> None:
    """Flags this rung does not run yet refuse in one line, rather than run another job than the other rungs."""
    gpu = args.accelerator == "gpu" or (args.accelerator == "auto" and torch.cuda.is_available())
    if args.strategy == "dp":  # on the CPU, the other rungs' line (the Trainer itself wraps the model in
        check_data_parallel(cuda=gpu)  # DataParallel when one process sees several GPUs)
    ddp = args.strategy == "ddp" or args.devices != 1
    if launcher() == "torchrun":  # its world must be the command line's: two processes never train alone
        check_launcher_world(args.num_nodes, args.devices, launcher_world_size())
    elif launcher() == "srun" and launcher_world_size() > 1:
        raise UserError(f"SLURM tasks (srun): not yet supported by {PROG}; start it with torchrun")
    elif ddp:
        raise UserError(f"--strategy ddp --devices {args.devices}: start {PROG} with torchrun --nproc-per-node "
                        f"{args.devices} (transformers' Trainer does not start processes itself)")
    for flag, given in (("--resume PATH", args.resume not in (None, "last")),
                        ("--resume with --limit-train-batches", args.resume and args.limit_train_batches != 1.0),
                        ("--resume under DDP", args.resume and ddp),
                        ("--auto-batch-size", args.auto_batch_size),
                        ("--strategy", args.strategy not in ("auto", "ddp")),
                        ("--num-nodes", args.num_nodes != 1), ("--accelerator", gpu)):
        if given:
            hint = {"--accelerator": " (give --accelerator cpu)", "--resume PATH": " (--resume last continues the run "
                                                                                 "from its latest checkpoint-N/)"}
            raise UserError(f"{flag}: not yet supported by {PROG}, which runs on the CPU (float32 or bf16-mixed), "
                            f"on one node, so far" + hint.get(flag, ""))
    if args.min_delta:
        raise UserError(f"--min-delta: not supported by {PROG}: transformers' EarlyStoppingCallback compares with the "
                        f"best value so far, which moves on any decrease, where Lightning's moves only on an "
                        f"improvement beyond min_delta")


def training_arguments(settings) -> Seq2SeqTrainingArguments:
    return Seq2SeqTrainingArguments(
        output_dir=str(Path(settings.output_dir) / "checkpoints"),  # checkpoint-N/ folders
        num_train_epochs=settings.max_epochs,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.accumulate_grad_batches,
        learning_rate=settings.lr,
        weight_decay=settings.weight_decay,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=settings.warmup_steps,
        max_grad_norm=settings.gradient_clip_val,  # 0: no clipping, as for the other rungs
        bf16=precision_for(settings.precision, cuda=False) == "bf16-mixed",  # accelerate's autocast of the forward
        # BART takes **kwargs, so the Trainer would multiply its (mean) loss by the process count under DDP
        average_tokens_across_devices=False,
        ddp_find_unused_parameters=False,  # as Lightning's DDPStrategy (the Trainer would set True: an extra pass)
        ddp_timeout=int(settings.ddp_timeout),
        seed=settings.seed,
        dataloader_num_workers=settings.num_workers,
        use_cpu=True,  # not_yet() refuses a GPU
        # validate, keep checkpoints and stop early once per epoch, on dev_loss
        eval_strategy="epoch",
        save_strategy="epoch",
        metric_for_best_model="dev_loss",
        greater_is_better=False,
        load_best_model_at_end=True,  # the test phase runs on the best model
        save_total_limit=settings.save_top_k,  # the most recent ones, and the best (not Lightning's top-k)
        batch_eval_metrics=True,  # dev_loss summed batch by batch (dev_loss.py)
        include_for_metrics=["loss"],
        # each epoch's shuffle drawn from the global generator, as a plain DataLoader draws it (accelerate's
        # seedable sampler would seed a generator of its own with seed + epoch)
        accelerator_config={"use_seedable_sampler": False, "even_batches": False},
        logging_strategy="no",  # metrics.csv and TensorBoard are metrics_files.py's
        report_to="none",
        restore_callback_states_from_checkpoint=True,  # early stopping's count, on resume
    )


def built_and_reseeded(settings, tokenizer, world_size: int):
    """The model, drawn right after the Trainer's seeding; under DDP every process seeds again after it, as Lightning
    does when it sets DDP up (and so the other rungs)."""
    model = make_model(settings, tokenizer)
    if world_size > 1:
        set_seed(settings.seed)
    return model


def limit_train_batches(settings, train_examples: int) -> list[LimitTrainBatches]:
    batches_per_epoch = math.ceil(train_examples / settings.batch_size)
    if num_train_batches(batches_per_epoch, settings.limit_train_batches) == batches_per_epoch:
        return []
    return [LimitTrainBatches(settings.limit_train_batches, batches_per_epoch, settings.accumulate_grad_batches)]


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    args = parse_args(PROG, TRAINER, argv)
    not_yet(args)
    torchrun = launcher() == "torchrun"  # the only launcher of this rung's DDP (not_yet)
    rank, world_size = (int(os.environ["RANK"]), launcher_world_size()) if torchrun else (0, 1)
    say = print if rank == 0 else (lambda *_: None)
    output_dir = choose_run_directory(args, TRAINER, rank, say)
    if rank == 0:
        prepare_output_dir(output_dir, args.resume, args.overwrite)
    settings = resolve_settings(args, output_dir, args.batch_size)
    resume_from = latest_checkpoint(output_dir / "checkpoints") if settings.resume else None

    set_seed(settings.seed)
    data = prepare_data(settings, output_dir, save_tokenizer=rank == 0)
    train_loss = MeanMetric(nan_strategy=float("nan"), sync_on_compute=False)  # as the Lightning rung's module
    # step checkpoints, Ctrl-C and SIGTERM, and what a checkpoint inside an epoch must hold to continue exactly
    mid_epoch_resume = MidEpochResume(train_loss, settings.checkpoint_every_n_steps, resume_from)
    trainer = QGTrainer(
        # model_init: the Trainer seeds, then builds the model, in __init__ and again in train(); passed a model,
        # it would re-seed after the model drew its weights, and the first shuffle would differ from the others'
        model_init=lambda: built_and_reseeded(settings, data.tokenizer, world_size),
        args=training_arguments(settings),
        train_dataset=data.train,
        eval_dataset=data.dev,
        data_collator=PadCollator(data.tokenizer.pad_token_id, with_index=False),
        compute_metrics=DevLoss(world_size),
        callbacks=[EarlyStopping(settings.patience),
                   MetricsFiles(output_dir, dict(vars(settings)), train_loss, resuming=resume_from is not None),
                   mid_epoch_resume,
                   *limit_train_batches(settings, len(data.train))],
        train_loss=train_loss,
    )
    say(start_line(data, trainer.model, f"Seq2SeqTrainer on {world_size} {trainer.args.device.type} device(s)"))
    if resume_from:
        check_resumable(resume_from, trainer.model)  # one line, not the Trainer's traceback
        say(f"resumed from {resume_from}")
    with mid_epoch_resume.signals.catching_stop_signals():  # on Ctrl-C or SIGTERM: Interrupted, once saved
        trainer.train(resume_from_checkpoint=resume_from)
    # the callback in use: on resume the Trainer rebuilds it from the checkpoint's state
    early_stopping = next(cb for cb in trainer.callback_handler.callbacks if isinstance(cb, EarlyStopping))
    if early_stopping.stopping_reason_message:
        say(f"early stopping: {early_stopping.stopping_reason_message}")
    # no best when every dev_loss was NaN: the latest checkpoint then, as the other rungs test last.ckpt
    ckpt_path = trainer.state.best_model_checkpoint or latest_checkpoint(trainer.args.output_dir)
    say(f"testing {ckpt_path}")
    # exported before the test: a Trainer given the model sets its config's use_cache to TrainingArguments'
    # (False), and predict writes generation defaults into its generation_config
    if rank == 0:
        export_pretrained(trainer.model, data.tokenizer, output_dir / "export")
    generated = test_phase(trainer, data, settings)  # every rank a share of the batches, gathered
    if rank != 0:
        return {}
    report = write_test_report(output_dir, data.test.examples, generated, ckpt_path)
    print(end_lines(report, ckpt_path, output_dir / "export", started))
    return report


def test_phase(trainer: QGTrainer, data, settings) -> list[str]:
    """Beam search over the test set with the best model (load_best_model_at_end put it back), as the other rungs
    decode (`shared.decoding`): `predict` with `predict_with_generate`, in a Trainer of its own, since the one that
    trains would also generate in every validation."""
    args = Seq2SeqTrainingArguments(output_dir=trainer.args.output_dir, per_device_eval_batch_size=settings.batch_size,
                                    predict_with_generate=True, seed=settings.seed, use_cpu=True, report_to="none",
                                    bf16=trainer.args.bf16)
    # the questions only: without labels, predict neither passes them to generate nor computes a loss
    collate = PadCollator(data.tokenizer.pad_token_id, with_index=False)
    tester = QGTrainer(model=trainer.model, args=args, train_loss=trainer.train_loss,
                       data_collator=lambda examples: {k: v for k, v in collate(examples).items() if k != "labels"})
    output = tester.predict(data.test, num_beams=settings.num_beams, do_sample=False,
                            max_new_tokens=settings.max_target_length, early_stopping=True)
    tokens = output.predictions[:len(data.test)]  # under DDP, the last batches filled up with the first examples
    tokens[tokens == -100] = data.tokenizer.pad_token_id  # batches padded to one length with -100
    return [text.strip() for text in data.tokenizer.batch_decode(tokens, skip_special_tokens=True)]


def latest_checkpoint(checkpoints: str | Path) -> str:
    """The Trainer's latest checkpoint-N/: what `--resume last` continues, and what a run without a best tests."""
    latest = get_last_checkpoint(checkpoints) if Path(checkpoints).is_dir() else None
    if latest is None:
        raise UserError(f"no checkpoint-N/ under {checkpoints}: nothing to resume or test")
    return latest


if __name__ == "__main__":
    exit_on_user_error(main)()
