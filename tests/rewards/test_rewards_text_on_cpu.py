"""Text rewards: the exact format rule, the length shape, answer extraction, response splitting."""

from __future__ import annotations

import math

import pytest

from openrlhf_maestro.rewards import extract_answer, format_reward, length_reward, split_response, token_f1, tokens

# ---------------------------------------------------------------- format


@pytest.mark.parametrize(
    "response",
    [
        "<think>x</think><answer>y</answer>",
        "<think>\nstep 1\nstep 2\n</think>\n\n<answer>\n42\n</answer>\n",
        "  \n<think></think> <answer>a</answer>  \t\n",  # silent thinking is allowed
        "<think>a < b and c > d</think><answer>yes</answer>",
    ],
)
def test_format_accepts(response: str) -> None:
    assert format_reward(response) == 1.0


@pytest.mark.parametrize(
    "response",
    [
        "",
        "<answer>y</answer>",  # no think block
        "<think>x</think>",  # no answer block
        "<answer>y</answer><think>x</think>",  # reordered
        "<think>x</think><answer> \n </answer>",  # empty answer
        "Sure! <think>x</think><answer>y</answer>",  # text before
        "<think>x</think> so <answer>y</answer>",  # text between
        "<think>x</think><answer>y</answer> done",  # text after
        "<think>x</think><answer>y</answer><answer>z</answer>",  # repeated answer
        "<think>x<think>y</think><answer>z</answer>",  # repeated think open
        "<think>x</think><answer>y",  # truncated
        "<think>x<answer>y</answer></think>",  # nested
        "<THINK>x</THINK><ANSWER>y</ANSWER>",  # tags are case-sensitive
    ],
)
def test_format_rejects(response: str) -> None:
    assert format_reward(response) == 0.0


def test_format_custom_tags() -> None:
    tags = {"think": ("<reasoning>", "</reasoning>"), "answer": ("<final>", "</final>")}
    assert format_reward("<reasoning>r</reasoning>\n<final>f</final>", **tags) == 1.0
    assert format_reward("<think>r</think><answer>f</answer>", **tags) == 0.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"think": ("<t>",)}, "think must be two different non-empty strings"),
        ({"think": ("<t>", "<t>")}, "think must be two different"),
        ({"answer": ("", "</a>")}, "answer must be two different"),
        ({"answer": ("<think>", "</think>")}, "four different strings"),
    ],
)
def test_format_bad_tags(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        format_reward("<think>x</think><answer>y</answer>", **kwargs)


# ---------------------------------------------------------------- length


@pytest.mark.parametrize(
    "n, target, tolerance, expected",
    [
        (0, 100, None, 1.0),
        (100, 100, None, 1.0),
        (150, 100, None, 0.5),
        (200, 100, None, 0.0),
        (10_000, 100, None, 0.0),
        (110, 100, 40, 0.75),
        (140, 100, 40, 0.0),
        (100.5, 100, 1, 0.5),
    ],
)
def test_length_shape(n: float, target: float, tolerance: float | None, expected: float) -> None:
    assert length_reward(n, target, tolerance) == pytest.approx(expected)


def test_length_is_bounded_and_non_increasing() -> None:
    values = [length_reward(n, 50) for n in range(0, 200)]
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


@pytest.mark.parametrize(
    "args, match",
    [
        ((10, 0), r"target must be a finite number > 0, got 0"),
        ((10, -5), r"target must be .* got -5"),
        ((10, math.inf), r"target must be .* got inf"),
        ((10, math.nan), r"target must be .* got nan"),
        ((10, True), r"target must be .* got True"),
        ((-1, 10), r"length must be a finite number >= 0 .* got -1"),
        ((math.nan, 10), r"length must be .* got nan"),
        (("12", 10), r"length must be .* got '12'"),
        ((10, 10, 0), r"tolerance must be a finite number > 0 or None .* got 0"),
        ((10, 10, -1.0), r"tolerance must be .* got -1.0"),
    ],
)
def test_length_validation(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        length_reward(*args)


# ---------------------------------------------------------------- extract_answer, token_f1


def test_extract_answer() -> None:
    assert extract_answer("<think>t</think><answer>\n 42 \n</answer>") == "42"
    assert extract_answer("<answer>first</answer> then <answer>second</answer>") == "second"
    assert extract_answer("<answer>truncated") is None
    assert extract_answer("no tags") is None
    assert extract_answer("</answer> <answer>") is None
    assert extract_answer("<final>x</final>", ("<final>", "</final>")) == "x"
    assert extract_answer("<answer></answer>") == ""


def test_token_f1() -> None:
    assert token_f1("The cat sat", "the cat sat.") == 1.0
    assert token_f1("cat", "the cat") == pytest.approx(2 * 1 / 3)
    assert token_f1("a a b", "a b b") == pytest.approx(2 * 2 / 6)  # multiset counts
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("»", "»") == 1.0 and token_f1("»", "!") == 0.0 and token_f1("", "cat") == 0.0
    assert tokens("小李很开心, OK") == ["小", "李", "很", "开", "心", "ok"]
    assert token_f1("Il ne bougera plus !", "Il ne bougera plus ! »") == 1.0


# ---------------------------------------------------------------- split_response

PROMPT = "<|im_start|>user\nQuestion: 2+2?<|im_end|>\n<|im_start|>assistant\n"
RESPONSE = "<think>add</think>\n<answer>4</answer>"


@pytest.mark.parametrize(
    "query",
    [
        PROMPT + RESPONSE + "<|im_end|>",
        PROMPT + RESPONSE,
        PROMPT + RESPONSE + "<|im_end|>\n<|endoftext|>",
        "<s>" + PROMPT + RESPONSE + "<|im_end|>",  # a BOS token decoded in front of the prompt
        PROMPT.replace("\n", " \n") + RESPONSE + "<|im_end|>",  # detokenization changed whitespace
        PROMPT[20:] + RESPONSE + "<|im_end|>",  # OpenRLHF left-truncated a long prompt
    ],
)
def test_split_response_finds_the_response(query: str) -> None:
    assert split_response(query, PROMPT) == RESPONSE


def test_split_response_finds_a_left_truncated_plain_prompt() -> None:
    prompt = "Question: " + "lorem ipsum " * 60 + "\nAnswer:"  # no chat template, no assistant header
    assert split_response(prompt[200:] + " 4<|endoftext|>", prompt) == " 4"


def test_split_response_falls_back_on_the_assistant_header() -> None:
    prompt = "x" * 300 + PROMPT
    query = "<|im_start|>assistant\n" + RESPONSE  # less of the prompt than PROMPT_TAIL_CHARS survived
    assert split_response(query, prompt) == RESPONSE
    llama = "<|start_header_id|>assistant<|end_header_id|>\n\n" + RESPONSE + "<|eot_id|>"
    assert split_response(llama, "y" * 300) == RESPONSE


def test_split_response_keeps_inner_markers_and_whitespace() -> None:
    query = PROMPT + "\n a<|im_end|>b \n<|im_end|>"
    assert split_response(query, PROMPT) == "\n a<|im_end|>b \n"  # whitespace before the end marker is kept
    assert split_response(PROMPT + "a<|im_end|>", PROMPT, end_markers=()) == "a<|im_end|>"


def test_split_response_raises_without_an_anchor() -> None:
    with pytest.raises(ValueError, match="cannot find the prompt in the query"):
        split_response("something else entirely", "<|user|>a very different prompt")


def test_split_response_round_trips_through_a_real_tokenizer() -> None:
    """decode(prompt ids + response ids) as OpenRLHF's agent builds `query`, with the tiny ChatML tokenizer."""
    tiny_model = pytest.importorskip("openrlhf_maestro.tiny_model")
    tok = tiny_model.build_tokenizer()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "\nQuestion: Why is the sky blue?\n\n<think>\n...\n</think>\n"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    response = "<think>\nRayleigh scattering.\n</think>\n\n<answer>\nShort wavelengths scatter more.\n</answer>"
    prompt_ids = tok(text=prompt, add_special_tokens=False)["input_ids"]
    action_ids = tok(text=response + "<|im_end|>", add_special_tokens=False)["input_ids"]
    query = tok.decode(prompt_ids + action_ids, skip_special_tokens=False)
    assert split_response(query, prompt) == response
    assert format_reward(split_response(query, prompt)) == 1.0
    truncated = tok.decode(prompt_ids[5:] + action_ids, skip_special_tokens=False)  # left truncation
    assert split_response(truncated, prompt) == response
