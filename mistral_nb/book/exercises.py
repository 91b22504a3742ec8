"""Check your answer to a chapter's exercise without seeing the solution.

    from mistral_nb.book.exercises import check
    check("05.1", (101, 4096, 5905))      # prints "05.1: ✓ correct" or "05.1: ✗ not yet ..."

Most answers are stored only as a SHA-256 digest of a canonical form of the value, salted with the
exercise's id, so the module does not give them away. Numbers are compared to the number of
decimals the exercise asks for (and to within about one unit of the last decimal, so that a
correct value computed slightly differently is not rejected); integers must be exact. Answers
that are code or token lists are checked by running or recomputing them with the package.

``is_correct`` returns the verdict as a bool (the solutions use it in their asserts).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional

__all__ = ["check", "is_correct", "form_of", "Answer", "Verified", "ANSWERS"]

MAX_NUMBERS_WITH_TOLERANCE = 8      # 3 ** 8 digests at most per check


@dataclass(frozen=True)
class Answer:
    """An answer known by its digest. ``form`` tells the learner what to pass; ``decimals``: numbers
    are compared rounded to that many decimals (None: integers, compared exactly)."""
    digest: str
    signature: str
    form: str
    decimals: Optional[int] = None


@dataclass(frozen=True)
class Verified:
    """An answer checked by running code: ``verify(answer) -> bool`` (it may compute the reference
    with the package, e.g. a tokenizer, so nothing is stored)."""
    verify: Callable[[Any], bool]
    form: str


# ---------------------------------------------------------------------------------------------
# canonical forms


def _plain(x: Any) -> Any:
    """Tensors, numpy arrays and scalars -> Python lists / numbers; tuples -> lists."""
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def signature(x: Any) -> str:
    """The shape of an answer without its values: 'n' number, '[..]' list, 's' anything else
    (a string, None, a dtype: so the shape does not tell which of them is expected)."""
    x = _plain(x)
    if isinstance(x, list):
        return "[" + ",".join(signature(v) for v in x) + "]"
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        return "n"
    return "s"


def _numbers(x: Any) -> list:
    x = _plain(x)
    if isinstance(x, list):
        return [n for v in x for n in _numbers(v)]
    return [x] if isinstance(x, numbers.Number) and not isinstance(x, bool) else []


def _replace_numbers(x: Any, values: list) -> Any:
    x = _plain(x)
    if isinstance(x, list):
        return [_replace_numbers(v, values) for v in x]
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        return values.pop(0)
    return x


def canonical(x: Any, decimals: Optional[int]) -> Any:
    """Numbers as text: integers exactly (an integral float counts as an integer) when ``decimals``
    is None, else every number with ``decimals`` decimals; strings stripped."""
    x = _plain(x)
    if isinstance(x, list):
        return [canonical(v, decimals) for v in x]
    if isinstance(x, bool) or x is None:
        return x
    if isinstance(x, numbers.Integral) and decimals is None:
        return str(int(x))                      # exactly, however large (float() would overflow)
    if isinstance(x, numbers.Number):
        if isinstance(x, complex) or not math.isfinite(float(x)):
            return repr(x)
        if decimals is None:
            return str(int(x)) if float(x).is_integer() else repr(float(x))
        return f"{float(x):.{decimals}f}"
    return str(x).strip()


def digest(exercise: str, value: Any, decimals: Optional[int] = None) -> str:
    """SHA-256 of the canonical form of ``value``, salted with the exercise id."""
    text = json.dumps(canonical(value, decimals), separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"mistral-nb/{exercise}/{text}".encode("utf-8")).hexdigest()


def make_answer(exercise: str, value: Any, form: str, decimals: Optional[int] = None) -> Answer:
    """The ``Answer`` record of ``value`` (how the entries of ANSWERS were made)."""
    return Answer(digest(exercise, value, decimals), signature(value), form, decimals)


def _candidates(value: Any, decimals: Optional[int]):
    """``value``, and with decimals: every combination of its numbers nudged by +-0.45 units of the
    last decimal, so a value within about one unit of the rounded answer matches it."""
    yield value
    if decimals is None:
        return
    nums = _numbers(value)
    if not nums or len(nums) > MAX_NUMBERS_WITH_TOLERANCE:
        return
    step = 0.45 * 10.0 ** (-decimals)
    for shifts in itertools.product((-step, 0.0, step), repeat=len(nums)):
        if any(shifts):
            yield _replace_numbers(value, [float(n) + s for n, s in zip(nums, shifts)])


# ---------------------------------------------------------------------------------------------
# checking


def _spec(exercise: Any):
    if not isinstance(exercise, str):
        raise TypeError(f"exercise must be an exercise id such as '05.1' (a str), got {exercise!r}")
    spec = ANSWERS.get(exercise)
    if spec is None:
        raise KeyError(f"no exercise {exercise!r}; known: {', '.join(sorted(ANSWERS))}")
    return spec


def _verdict(exercise: str, answer: Any) -> tuple[Optional[bool], str]:
    spec = _spec(exercise)
    if answer is None:
        return None, f"{exercise}: no answer yet. Expected {spec.form}."
    if isinstance(spec, Verified):
        try:
            ok = bool(spec.verify(answer))
        except Exception as e:  # the learner's code raised, or the value has the wrong shape
            return False, f"{exercise}: ✗ checking it raised {type(e).__name__}: {e}. Expected {spec.form}."
        return ok, f"{exercise}: ✓ correct" if ok else f"{exercise}: ✗ not yet. Expected {spec.form}."
    try:
        if signature(answer) != spec.signature:
            return False, f"{exercise}: ✗ expected {spec.form}."
        ok = any(digest(exercise, c, spec.decimals) == spec.digest for c in _candidates(answer, spec.decimals))
    except (TypeError, ValueError, OverflowError) as e:   # a complex number, an int too large for a float...
        return False, f"{exercise}: ✗ expected {spec.form} (this answer cannot be compared: {type(e).__name__}: {e})."
    if ok:
        return True, f"{exercise}: ✓ correct"
    how = f" (numbers are compared to {spec.decimals} decimals)" if spec.decimals is not None else ""
    return False, f"{exercise}: ✗ not yet{how}."


def is_correct(exercise: str, answer: Any) -> bool:
    """True when ``answer`` is a right answer to ``exercise`` ("05.1": chapter 05, exercise 1)."""
    return bool(_verdict(exercise, answer)[0])


def check(exercise: str, answer: Any) -> None:
    """Print whether ``answer`` answers ``exercise``, without revealing the expected value.
    ``answer=None`` prints the form the answer should take."""
    print(_verdict(exercise, answer)[1])


def form_of(exercise: str) -> str:
    """What the answer to ``exercise`` should look like."""
    return _spec(exercise).form


# ---------------------------------------------------------------------------------------------
# answers computed with the package (nothing stored)


def _tokenizer():
    from ..tokenizer import Tokenizer

    return Tokenizer.mistral_v1()


def _verify_stream_decoder(stream_decode) -> bool:
    """01.2: the generator's pieces add up to the decoded text, and none is a broken character."""
    tok = _tokenizer()
    for text in ("Le café 🤖 coûte 3 €, 龘!", "naïve 🦜🦜 ☕ done", "plain ascii"):
        ids = tok.encode(text)
        chunks = list(stream_decode(tok, ids))
        if "".join(chunks) != tok.decode(ids) or any("\ufffd" in c for c in chunks):
            return False
    return True


def _verify_chat_by_hand(ids) -> bool:
    """01.3: the ids of the three-message conversation, as Mistral's format lays them out."""
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                    {"role": "user", "content": "Bye"}]
    return list(_plain(ids)) == _tokenizer().encode_chat(conversation)


def _verify_space_pieces(pieces) -> bool:
    """01.4: the pieces of the two texts, in order."""
    tok = _tokenizer()
    got = _plain(pieces)
    return isinstance(got, list) and len(got) == 2 and \
        [list(p) for p in got] == [tok.pieces("Hello  world"), tok.pieces("a" + " " * 8 + "b")]


def _chapter10():
    from . import chapter10

    return chapter10


# ---------------------------------------------------------------------------------------------
# the answers (digests made with make_answer; tests/test_exercises.py checks every one)

ANSWERS: dict[str, Any] = {
    # 01 tokenizer
    "01.1": Answer("bbda2310e86be19402a8dd242f93d56ebf745ea8a20b043debabfd7de4e5cce9", "[n,n,n,n,n]",
                   "the list of ids of tok.encode('🦜', bos=False)"),
    "01.2": Verified(_verify_stream_decoder, "your generator function stream_decode(tok, ids)"),
    "01.3": Verified(_verify_chat_by_hand, "the list of ids after 'Bye' (user, assistant, user)"),
    "01.4": Verified(_verify_space_pieces,
                     "a pair (pieces of 'Hello  world', pieces of 'a' + 8 spaces + 'b'), each a list of strings"),
    # 02 embeddings and RMSNorm
    "02.1": Answer("6537e9ac643c4109680f2ebb407f2f236f990b50f5e4155bf1e21a49a7aa968b", "[n,n]",
                   'the normalised vector: two numbers, to 4 decimals', 4),
    "02.2": Answer("8dbe1a3751b939766f1e26f4060085945d5b03b31bfda02c7bf9b02580e56e41", "[n,n]",
                   'a pair (parameters of all RMSNorm layers, parameters LayerNorm would need)'),
    "02.3": Answer("2d99c90ea1dc3b3e5a477a43910c40e9bdd31d0d04221fd1f94b4ce4cd18f2c7", "n",
                   'the largest float16 value c that still gives all ones', 3),
    # 03 RoPE
    "03.1": Answer("925048e625c2487e3cc0a29f4ad5e3359a0bff3c76fe44d11419c25c30a67849", "[n,n]",
                   'a pair (first pair index, last pair index)'),
    "03.2": Answer("0f5a391f5f9dcfa07268a32ca1e84786e8b8f4797b745d6c2402eefd7b7c6509", "[n,n]",
                   'a pair (angle of pair 0, angle of pair 1) in radians in [0, 2π), to 4 decimals', 4),
    "03.3": Answer("d0535d86b20c3387bd0427a2a959fd74f36853ac2dd037a134dba7b334cf749f", "[n,n]",
                   'a pair (HF row that Mistral row 7 moves to, Mistral row that ends up in HF row 64)'),
    "03.4": Answer("c6f16aa7cf22e68b5fa6dbf4a190dfb4b8495ff7173446a07fe40548d3385116", "[n,n]",
                   'a pair (longest wavelength in thousands of tokens, rounded to an integer; number of pairs longer than 4,096 tokens)'),
    # 04 attention and GQA
    "04.1": Answer("f0031e70cfc09a1119f45b3c62e845ad913b97e86dbea673f5dca4a275116b94", "[n,n]",
                   'a pair (GQA cache in GB, MHA cache in GB), to 2 decimals', 2),
    "04.2": Answer("061b54f3a199ebad002258b8c601b39db09397832ee7f3c634ba1e996f05fb9a", "[n,n]",
                   'a pair (query heads per key/value head, the key/value head query head 13 reads)'),
    "04.3": Answer("388d1f8a1edcde32bf8697cdebb37f1804e4820fccb3f180903633e673c0f776", "n",
                   'the number of parameters (an integer)'),
    # 05 sliding window
    "05.1": Answer("8525b12e7e57a8864cd89c8a917168ea6c27f569a049b732dd94fcd7395c2a61", "[n,n,n]",
                   'a triple (keys seen by position 100, keys seen by position 10,000, oldest position the second can read)'),
    "05.2": Answer("88f21d47f17cc58ebe7020e81f5fc1c6c7970949b7b310a9ae9abe71f8b9d59e", "n",
                   'the fraction, to 4 decimals', 4),
    "05.3": Answer("b86b7c6da30f830af2beb57437aff52028a89ad420cbc82536b6196c1866ab63", "n",
                   'the number of layers'),
    "05.4": Answer("761c684be0407ac6b15fb72880bee1934396743cf29913f6eb128a3d78004fc1", "n",
                   'the shortest length S for W = 5'),
    # 06 rolling cache
    "06.1": Answer("1563d2055ecbf5d0eaea2d03aaf613a7e04444223c763a3f999233af8f66c738", "[n,n]",
                   'a pair (slot, position it held before)'),
    "06.2": Answer("f16617b22c4c4be28b4e7173aaa646165b43c68d791b6f53e2d16ec43b2a6b06", "[n,n]",
                   'a pair (bytes with the rolling buffer, bytes with a full cache)'),
    "06.3": Answer("12343a95340b376868c4fb200bb42a2481c07981cfebbff67c14c27f39d2083a", "[n,n,n]",
                   "a triple (forward passes, queries of the last chunk's mask, keys of the last chunk's mask)"),
    # 07 the full model
    "07.1": Answer("74c79f6ec520c0a55917843b39754d52c53cb9afc5be8a8448b94d6847467765", "n",
                   'the number of parameters (an integer)'),
    "07.2": Answer("344f237a0682ae281580084aba25edeb29c914129d700d6be8d0b82ae780df6f", "[n,n]",
                   'a pair (bytes of one block in bf16, share of all 14.48 GB held by the 32 blocks, in per cent to 1 decimal)', 1),
    "07.3": Answer("ec7bac27198fe037bfe8b0dbab20c87c9d1adb42549c856309ed8600dcf5bf93", "[n,n]",
                   'a pair (the hidden width h, to 2 decimals; the multiple of 256 Llama 2 uses)', 2),
    # 08 generation
    "08.1": Answer("3035c6df2091e6040454c41c477bf5075558580313fd8f678b1ffc7374839d0f", "[[n,n,n,n],[n,n,n,n]]",
                   'a pair (list of the kept token indices, list of their renormalised probabilities to 3 decimals)', 3),
    "08.2": Answer("994a9e0b920a0af3fcbf07495d79a8cd957773f2c4a03c176eab0ee26067e1a0", "n",
                   'the temperature T, to 4 decimals', 4),
    "08.3": Answer("4dc8c6218d2db8ba0be6fa0d5196cc6f2d4fb8083f42a4fd0303c34cee48b522", "n",
                   'the number of forward passes'),
    "08.4": Answer("775900f94dc1284a6d28f9fc6efa096dc795310388d061938077b7b5128af643", "n",
                   'the number of prompts in the batch'),
    # 09 performance
    "09.1": Answer("6ee3f369ebe5de4386a5c8848a9331bee8b727774be0a32759e21e61a9859eb0", "n",
                   'the ratio, to 2 decimals', 2),
    "09.2": Answer("a477e129d01895a574340696f950a9fac21ed2b57bfbeb679439969edebbbdf0", "n",
                   'the smallest batch size (an integer)'),
    "09.3": Answer("ea490c927c433ee32090b0eaed3d1d3b980938ff933736747ce64d8c7711fe36", "[n,n]",
                   'a pair (bf16 tokens/s, int8 tokens/s), rounded to integers'),
    "09.4": Answer("56c22648650542dafd6dc6d748fb078ed09fbfc719a81d48200d9b2b025a6fe4", "[n,n]",
                   "a pair (bytes of the bf16 score matrix, bytes of the bf16 running state with tiles of 128 x 128)"),
    "09.5": Answer("1f6adff4ed0e65f67cdd5e39323e84edbb4ebc5c597ee2932ea2d5048577df3c", "[n,n]",
                   "a pair (seconds token by token, seconds in one chunk), each to 2 decimals", 2),
    # 10 int8 and real weights
    "10.1": Answer("df07988ee2fb32f08914e8a860ece4388dcbc5a49f1dac520532fb3290f6d8c8", "[n,n]",
                   'a pair (bytes of the all-int8 model, bytes saved)'),
    "10.2": Answer("b644e60d64bb43b69f1b337a44f126951ee247df9ef20579137ba0eada125731", "[n,n]",
                   "a pair (the row index, the largest |weight| of that row divided by the largest |weight| of the "
                   "whole matrix, to 2 decimals)", 2),
    "10.3": Answer("96aa974dc195b183ba79a98532988e9e008a129a63d1489bfa34b612c4aabe9d", "[s,s,s,s]",
                   "a 4-tuple (L4 dtype, L4 quantize, CPU dtype, CPU quantize), e.g. (torch.float16, None, torch.float32, 'int8')"),
    "10.4": Verified(lambda fn: _chapter10().verify_q4_0_by_hand(fn),
                     "your function q4_0_block(x) -> the 18 bytes (a bytes object or a list of ints) of one block of 32 floats"),
    "10.5": Verified(lambda pair: _chapter10().verify_head_int4_flips(pair),
                     "a pair (positions whose argmax differs with the head in float, with the head in int4 too)"),
    # 11 trained attention
    "11.1": Answer("89105c636dfa5750f6b4d6bc06a6482fa760c85b94e89ef345d3799af891d26e", "[n,n]",
                   'a pair (reach with W keys per query, reach with W + 1 keys per query)'),
    "11.2": Answer("2a84b443e77f46d0347ec350ab41b8115fa0f2ef9e0553c5d316783be5176a7e", "n",
                   'the number of layers'),
    "11.3": Answer("d9b1821a09dfe19d39c968cc80981fd928ddc0a30727f4928c2222201272893f", "n",
                   'the loss floor in nats, to 3 decimals', 3),
    "11.4": Answer("40ecaa77562bd986a333bc857fd4da17c6f279fd42133e3ae66773f498a19f0b", "[n,n]",
                   'a pair (tokens reached with L = 1, W = 8; tokens reached with L = 2, W = 4)'),
    # 12 a model trained on English
    "12.1": Answer("3644a3a7380b71a7f006bf628aa5d302fca018b4382674159312e84e4f2c147a", "[n,n]",
                   'a pair (reach in tokens, positions out of reach of the first token)'),
    "12.2": Answer("c387fb8e6812cc181fbb528147b04d12f3174d54a96b62f6f950feb6a545ddaf", "[n,n]",
                   'a pair (nats to halve the perplexity, the loss needed), each to 3 decimals', 3),
    "12.3": Answer("96d666ae14936b12f7b168c93cbe36d23b6921764454d13bc0eb44a3b716dc3f", "[n,n]",
                   'a pair (share in this model, share in Mistral 7B), both tied, each to 3 decimals', 3),
    "12.4": Answer("a163fb4792bc69f7bfddfbedb9b7ff106e517cfc70da86ad68cc5295ca20d592", "[n,n]",
                   'a pair (after ▁United, after ▁the), each to 3 decimals', 3),
    "12.5": Answer("0593a69e8f9779afcfb4e6153b42b88b31167bfa42ff171ae5189cf7ac277dcd", "[n,n]",
                   'a pair (held-out loss with W = 8, with W = 32), each to 2 decimals', 2),
    # 13 tensor parallelism
    "13.1": Answer("ad916b4b37da5c6314e077af3994731beaf7c74088ba496c7a163a1b61dbdbfd", "[n,n]",
                   'a pair (bytes held per rank, bytes if split 16 ways)'),
    "13.2": Answer("ed6d97dd0c130544d0dee251ef5795ed19a7da3e6ba2fecbfec820c8efecec30", "[[n,n],n]",
                   "a pair (list of the ranks that share key/value head 0, key/value heads in each rank's cache)"),
    "13.3": Answer("a116bc90cedeb6d5119d7de5e2728723c47329351f419af860e70ab92894827e", "[n,n]",
                   'a pair (tokens per pass over NVLink, tokens per pass over PCIe 5.0)'),
    "13.4": Answer("d8df285c254c92e84cdbde9c09a243f038d96d2bb411d5dcbce13bea3d33893b", "[n,n]",
                   'a pair (conversations with paged blocks, with rolling buffers)'),
    "13.5": Answer("ec05f293e241df8bbb1b421c8be4c5aa77fe29025a7aca9db0424e1392b7b013", "[n,n]",
                   'a pair (positions where the ranks agree with one seed, with a seed per rank)'),
    # 14 evaluation
    "14.1": Answer("d416940da96bae98114a6b58cd3e523635f3d46996b1cf0c735fa83560b2d145", "[n,n]",
                   'a pair (pass@1, pass@10), each to 4 decimals', 4),
    "14.2": Answer("14d6a5234c8db1dc5e03bffe7c81192819961b6018beba419714e22d176feec2", "n",
                   'the accuracy, to 3 decimals', 3),
    "14.3": Answer("768c3b97a2f3a85c457280978077f4d604a644127800a7da789611e58ffc3382", "n",
                   'the number of items'),
    "14.4": Answer("0426b6a4b28f525ef0db23781d4449ad0bcdba434389318395f384cedf72fa42", "[n,n,n]",
                   'the list of continuation token ids'),
    # 15 from base to instruct
    "15.1": Answer("29c3c3702e2d81b7ad7be0715e0bf31749fe253c45bf834cc4133f76452b0656", "[n,n]",
                   'a pair (trained parameters, share of the model to 4 decimals)', 4),
    "15.2": Answer("507cad3e9d81ea8183f0475b1bbd1a5016b23dd2ef62686e33dbf4441022d524", "[n,n]",
                   'a pair (loss, loss at the start), each to 4 decimals', 4),
    "15.3": Answer("cb26fb78162e42ee8230cf63398f44f968fc024409e42d0f4aa42f1871b7739b", "[n,n]",
                   'a pair (conversations, rows)'),
    "15.4": Answer("996234cf8931bb2da766fce5d17c2bd49f223505a5ea2d96757d4cedb348c37b", "[n,n]",
                   'a pair (GB with checkpointing, GB without), each to 2 decimals', 2),
}
