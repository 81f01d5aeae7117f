"""`python -m cmelt.model_card MODEL_FOLDER [--results PATH ...] [--license ID] [--base_model ORG/NAME] [--provenance TEXT]
[--datasets ID ...] [--figures PNG ...] [--output README.md]` (also `cmelt-model-card`)."""

import argparse

from .generate import write_model_card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m cmelt.model_card", description="Write the Hub README.md of a saved C-MELT folder."
    )
    parser.add_argument("model_folder", help="folder written by save_pretrained (holds config.json)")
    parser.add_argument(
        "--results", nargs="+", metavar="PATH",
        help="results JSON files or folders, schema cmelt-results/1 (default: MODEL_FOLDER/results if present)",
    )
    parser.add_argument("--license", help="Hub licence id of the weights (mit, apache-2.0, cc-by-nc-4.0, other ...); "
                        "default: mit for the synthetic demo, else unknown")
    parser.add_argument("--base_model", help="Hub id of the model these weights were fine-tuned or converted from")
    parser.add_argument("--provenance", help="where the weights come from, in one sentence")
    parser.add_argument("--datasets", nargs="+", metavar="ID", help="Hub ids of the datasets the weights were trained on")
    parser.add_argument("--figures", nargs="+", metavar="PNG", default=[], help="extra PNG figures to embed")
    parser.add_argument("--output", help="card path (default: MODEL_FOLDER/README.md)")
    parser.add_argument("--model_name", help="name in the model-index (default: the folder name)")
    parser.add_argument("--repo_id", help="Hub id shown in the usage snippets (default: your-username/<model name>)")
    parser.add_argument("--result_model", help="keep only results whose 'model' field equals this")
    args = parser.parse_args(argv)
    path = write_model_card(
        args.model_folder, args.results, args.output, args.figures, license=args.license, base_model=args.base_model,
        provenance=args.provenance, datasets=args.datasets, model_name=args.model_name, repo_id=args.repo_id,
        result_model=args.result_model,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
