"""The GRPO outcome reward of one rollout, as a pure function over strings (SIDREASONER.md §5).

Rule, for a target of P codes (the published rule is P = 3):

1. the text after the first ``</think>``; none -> 0. The whole text after it is read, not only its
   last 50 characters as in the public code, so text after the SID cannot hide it;
2. its first P angle-bracket tokens; fewer than P -> 0;
3. prefix score: with m >= 1 leading codes equal to the target's, 2**(m - P) (a later code counts
   only when every earlier one matches). P = 3 gives the published 0.25 / 0.5 / 1.0; our P = 4
   (3 levels + de-dup) gives 0.125 / 0.25 / 0.5 / 1.0, so an exact hit is worth 1 at any P;
4. plus 0.1 when the P tokens are the SID of a real item.

>>> valid = {"<a_1><b_2><c_3>", "<a_1><b_2><c_4>"}
>>> sid_reward("<think>\\nwhy\\n</think>\\n\\n<a_1><b_2><c_3>", "<a_1><b_2><c_3>", valid)
1.1
>>> sid_reward("</think><a_1><b_2><c_4>", "<a_1><b_2><c_3>", valid)
0.6
>>> sid_reward("</think><a_2><b_2><c_3>", "<a_1><b_2><c_3>", valid)
0.0
"""

from __future__ import annotations

from collections.abc import Container

from s2gr_core.models.sidreasoner.tokens import ANGLE_TOKEN, END_THINK

VALID_BONUS = 0.1


def answer_codes(completion: str, n: int) -> list[str] | None:
    """The first ``n`` angle-bracket tokens after the first ``</think>``; None without ``</think>`` or with fewer.

    >>> answer_codes("<think>a <a_3></think> <a_1><b_2><c_3> so", 3)
    ['<a_1>', '<b_2>', '<c_3>']
    """
    _, found, answer = completion.partition(END_THINK)
    codes = ANGLE_TOKEN.findall(answer)[:n] if found else []
    return codes if found and len(codes) == n else None


def sid_reward(completion: str, target_sid: str, valid_sids: Container[str]) -> float:
    """Reward of ``completion`` (special tokens already removed) against ``target_sid``."""
    target = ANGLE_TOKEN.findall(target_sid)
    if not target:
        raise ValueError(f"target SID {target_sid!r} holds no <x_n> code tokens")
    codes = answer_codes(completion, len(target))
    if codes is None:
        return 0.0
    matched = 0
    for got, want in zip(codes, target, strict=True):
        if got != want:
            break
        matched += 1
    prefix = 2.0 ** (matched - len(target)) if matched else 0.0
    bonus = VALID_BONUS if "".join(codes) in valid_sids else 0.0
    return round(prefix + bonus, 10)
