"""A tiny, local T5 text tower (tokenizer + random-init encoder) for tests and CPU demos: no hub download.

`build_tiny_t5(texts, output_dir)` trains a SentencePiece unigram model on the given reports, turns it into a
`T5Tokenizer` (pad 0, eos 1, unk 2, the learned pieces, then the 100 `<extra_id_N>` sentinels in T5's reversed
order at the end of the vocabulary) and saves a random-init `T5EncoderModel` of the requested size beside it.

transformers 5 note: `T5Tokenizer(vocab_file=...)` ignores the file and builds an empty vocabulary. The pieces and
scores have to be extracted from the SentencePiece model first, which is what
`T5Tokenizer.convert_to_native_format(vocab_file=...)` does (the same path `from_pretrained` takes for a
`spiece.model`); its result is then passed to the constructor.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

NUM_SENTINELS = 100


def build_tiny_t5(
    texts: list[str],
    output_dir: str | os.PathLike,
    vocab_size: int = 512,
    d_model: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    d_ff: int = 128,
    seed: int = 0,
) -> Path:
    """Train a tokenizer on `texts`, save it and a random-init `T5EncoderModel` of this size to `output_dir`.

    `vocab_size` is the SentencePiece vocabulary (pad, eos, unk included) before the 100 sentinels are added; a
    small corpus may yield fewer pieces (the limit is soft). The model's vocabulary is the tokenizer's length.
    Returns `output_dir` as a Path; load with `AutoTokenizer.from_pretrained` / `T5EncoderModel.from_pretrained`.
    """
    import sentencepiece as spm
    import torch
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    corpus = [text.strip() for text in texts if isinstance(text, str) and text.strip()]
    if not corpus:
        raise ValueError("build_tiny_t5 needs at least one non-empty text to train the tokenizer on")
    if vocab_size < 8:
        raise ValueError(f"vocab_size must be at least 8 (3 special tokens + pieces), got {vocab_size}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model_bytes,
        model_type="unigram",
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,
        minloglevel=2,
    )
    with tempfile.TemporaryDirectory() as scratch:
        spm_path = Path(scratch) / "spiece.model"
        spm_path.write_bytes(model_bytes.getvalue())
        tokenizer_kwargs = T5Tokenizer.convert_to_native_format(vocab_file=str(spm_path))
        tokenizer_kwargs.pop("vocab_file", None)
        tokenizer = T5Tokenizer(extra_ids=NUM_SENTINELS, model_max_length=512, **tokenizer_kwargs)
    tokenizer.save_pretrained(output_dir)

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_heads=num_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        is_encoder_decoder=False,
        tie_word_embeddings=False,
    )
    T5EncoderModel(config).save_pretrained(output_dir)
    return output_dir
