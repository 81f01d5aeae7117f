"""`python -m model_card MODEL_FOLDER [--results PATH ...] [--figures PNG ...] [--output README.md]`."""

import argparse

from .generate import write_model_card


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m model_card", description="Write the Hub README.md of a saved C-MELT folder."
    )
    parser.add_argument("model_folder", help="folder written by save_pretrained (holds config.json)")
    parser.add_argument(
        "--results", nargs="+", metavar="PATH",
        help="results JSON files or folders (default: MODEL_FOLDER/results if present)",
    )
    parser.add_argument("--figures", nargs="+", metavar="PNG", default=[], help="extra PNG figures to embed")
    parser.add_argument("--output", help="card path (default: MODEL_FOLDER/README.md)")
    parser.add_argument("--model-name", help="name in the model-index (default: the folder name)")
    parser.add_argument("--repo-id", help="Hub id shown in the usage snippets (default: your-username/<model name>)")
    parser.add_argument("--base-model", help="Hub id of the checkpoint the text tower was initialised from, if any")
    parser.add_argument("--result-model", help="keep only results whose 'model' field equals this")
    args = parser.parse_args(argv)
    path = write_model_card(
        args.model_folder, args.results, args.output, args.figures,
        model_name=args.model_name, repo_id=args.repo_id, base_model=args.base_model, result_model=args.result_model,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
