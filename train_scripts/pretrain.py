"""C-MELT pretraining, the command.

    accelerate launch --config_file configs/accelerate/ddp.yaml train_scripts/pretrain.py configs/paper.yaml

Arguments come from the command line or one JSON / YAML file (`HfArgumentParser`): `CMELTModelArguments`,
`CMELTDataArguments` and `CMELTTrainingArguments` (a `TrainingArguments`), whose defaults are the paper's optimiser row
(Adam beta 0.9/0.98, eps 1e-6, weight decay 0.01, lr 5e-5, tri-stage 0.1/0.4/0.5, 300k steps, batch 128).
What a run does (resuming, the run record, the final model folder) is `train_scripts.pretraining.pretrain`; this
file is the command line only.
"""

from __future__ import annotations

import logging
import sys

from transformers import HfArgumentParser, TrainingArguments

from cmelt.train_scripts.pretraining import CMELTDataArguments, CMELTModelArguments, CMELTTrainingArguments, pretrain


def parse_arguments(argv: list[str]) -> tuple[CMELTModelArguments, CMELTDataArguments, CMELTTrainingArguments]:
    parser = HfArgumentParser((CMELTModelArguments, CMELTDataArguments, CMELTTrainingArguments))
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv: list[str] | None = None) -> None:
    """Pretrain on a converted corpus (`--dataset_path ...` or a JSON/YAML file of the same arguments). The embedded
    demo, which needs no corpus, is its own command: `cmelt-demo` / `python train_scripts/demo.py`."""
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args = parse_arguments(argv)
    configure_logging(training_args)
    pretrain(model_args, data_args, training_args)


def configure_logging(training_args: TrainingArguments) -> None:
    """Scripts' logging: our modules (cmelt.train_scripts, cmelt.data) at INFO on the main process, WARNING on the others;
    transformers at the level `--log_level` / `--log_level_replica` give this process."""
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    level = logging.INFO if training_args.should_log else logging.WARNING
    for name in ("__main__", "cmelt"):
        logging.getLogger(name).setLevel(level)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


if __name__ == "__main__":
    main()
