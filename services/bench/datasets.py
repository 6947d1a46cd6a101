"""Prompts for a run: random text of a given token length, a JSONL prompts file, or ShareGPT JSON.

Token counts come from the tokenizer named in the spec (a local ``tokenizer.json``, read with the ``tokenizers``
package) or, without one, from an estimate (the result says which): random prompts are that many common English
words, one token each in the usual BPE vocabularies; file prompts count 4 bytes a token. The server's own counts
(``usage``) replace these in the metrics whenever it reports them, as ``vllm bench serve`` does.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.bench.result import ESTIMATE
from services.bench.spec import BenchSpec, JsonlDataset, RandomDataset, ShareGptDataset

# Short common words; random prompts are drawn from them (vLLM decodes random token ids instead).
_WORDS = ("the of and to in is was for on are with as at be this have from or one had by word but not what all were "
          "we when your can said there use an each which she do how their if will up other about out many then them "
          "these so some her would make like him into time has look two more write go see number no way could people "
          "my than first water been call who oil its now find long down day did get come made may part").split()


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class Prompt:
    text: str
    prompt_len: int
    output_len: int


def estimate_tokens(text: str) -> int:
    return max(1, round(len(text.encode()) / 4))


class TokenCounter:
    """Counts tokens with the spec's tokenizer, or estimates them; ``name`` is its path or "estimate"."""

    def __init__(self, tokenizer_path: str | None) -> None:
        self.name = ESTIMATE
        self._encode: Callable[[str], int] = estimate_tokens
        self._decode: Callable[[list[int]], str] | None = None
        self.vocab_size = 0
        if tokenizer_path is None:
            return
        try:
            from tokenizers import Tokenizer  # type: ignore[import-not-found]
        except ImportError:
            raise DatasetError("a tokenizer needs the `tokenizers` package (pip install tokenizers); "
                               "leave tokenizer unset to estimate token counts") from None
        path = Path(tokenizer_path)
        if path.is_dir():
            path = path / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the library raises its own exception types
            raise DatasetError(f"cannot load tokenizer {path}: {exc}") from None
        self.name = str(path)
        self._encode = lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)
        self._decode = lambda ids: tokenizer.decode(ids)
        self.vocab_size = tokenizer.get_vocab_size()

    def count(self, text: str) -> int:
        return self._encode(text)

    def random_text(self, rng: random.Random, tokens: int) -> str:
        if self._decode is not None and self.vocab_size > 100:
            return self._decode([rng.randrange(100, self.vocab_size) for _ in range(tokens)])
        # One common word (with its leading space) is one token in the BPE vocabularies of the usual models.
        return " ".join(rng.choice(_WORDS) for _ in range(tokens))


def _spread(rng: random.Random, length: int, ratio: float) -> int:
    low, high = max(1, int(length * (1 - ratio))), max(1, int(length * (1 + ratio)))
    return rng.randint(low, high)


def load_prompts(spec: BenchSpec, counter: TokenCounter, count: int, seed_offset: int = 0) -> list[Prompt]:
    """``count`` prompts for ``spec``; a file with fewer entries is cycled. DatasetError for a bad file."""
    rng = random.Random(spec.seed + seed_offset)
    dataset = spec.dataset
    if isinstance(dataset, RandomDataset):
        prompts = []
        for _ in range(count):
            input_len = _spread(rng, dataset.input_len, dataset.range_ratio)
            output_len = _spread(rng, dataset.output_len, dataset.range_ratio)
            text = counter.random_text(rng, input_len)
            prompt_len = input_len if counter.name == ESTIMATE else counter.count(text)
            prompts.append(Prompt(text, prompt_len, output_len))
        return prompts
    pool = _read_jsonl(dataset, counter) if isinstance(dataset, JsonlDataset) else _read_sharegpt(dataset, counter)
    if not pool:
        raise DatasetError(f"{dataset.path}: no usable prompts")
    rng.shuffle(pool)
    return [pool[i % len(pool)] for i in range(count)]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text") from None


def _read_jsonl(dataset: JsonlDataset, counter: TokenCounter) -> list[Prompt]:
    prompts = []
    for number, line in enumerate(_read(dataset.path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry: Any = json.loads(line)
        except ValueError as exc:
            raise DatasetError(f"{dataset.path}:{number}: not JSON ({exc})") from None
        text = entry.get("prompt") if isinstance(entry, dict) else None
        if not isinstance(text, str) or not text:
            raise DatasetError(f"{dataset.path}:{number}: each line needs a non-empty string \"prompt\"")
        output_len = dataset.output_len
        if output_len is None:
            output_len = next((entry[k] for k in ("output_len", "output_tokens", "max_tokens") if k in entry), 128)
        if not isinstance(output_len, int) or isinstance(output_len, bool) or output_len < 1:
            raise DatasetError(f"{dataset.path}:{number}: the output length must be a positive integer")
        prompts.append(Prompt(text, counter.count(text), output_len))
    return prompts


def _read_sharegpt(dataset: ShareGptDataset, counter: TokenCounter) -> list[Prompt]:
    try:
        data = json.loads(_read(dataset.path))
    except ValueError as exc:
        raise DatasetError(f"{dataset.path}: not JSON ({exc})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{dataset.path}: ShareGPT data is a JSON list of conversations")
    prompts = []
    for entry in data:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            continue
        first, second = turns[0], turns[1]
        if not (isinstance(first, dict) and isinstance(second, dict)):
            continue
        text, answer = first.get("value"), second.get("value")
        if not isinstance(text, str) or not isinstance(answer, str) or not text:
            continue
        prompt_len = counter.count(text)
        output_len = dataset.output_len or counter.count(answer)
        # vLLM's filter (is_valid_sequence): drop very short and too long pairs unless the length is fixed.
        if dataset.output_len is None and (prompt_len < 4 or output_len < 4 or prompt_len > 1024
                                           or prompt_len + output_len > 2048):
            continue
        prompts.append(Prompt(text, prompt_len, output_len))
    return prompts
