"""ttrl rewards inside verl's reward loop, on verl's real config, DataProto and reward workers.

verl pins an older transformers than ttrl, so it lives in its own environment (docs/scale_out.md):
    python -m venv /work/venv-verl --system-site-packages
    /work/venv-verl/bin/pip install 'verl==0.9.1' cachetools uvicorn fastapi   # torch pinned by a constraint
    PYTHONPATH=$PWD/src /work/venv-verl/bin/python -m pytest tests/test_integrations_verl.py
In an environment without verl every test here is skipped.
"""
import asyncio
import os
import random

import numpy as np
import pytest

verl = pytest.importorskip("verl")

import torch
from verl import DataProto

from ttrl.integrations.scoring import GroupScorer
from ttrl.rewards import all_rewards, register_reward
from ttrl.zoo import resolve_model

LABEL = "label-5150"
_seen: list = []


@register_reward("test_verl_sees_no_label", help="test only: majority that fails if a label reaches it")
def _sees_no_label(group, params, ctx):
    for text in (group.query.prompt, group.query.id, *group.responses, *(a or "" for a in group.answers)):
        assert LABEL not in text and "5150" not in text, "a label reached the reward"
    _seen.append(group)
    return all_rewards()["majority"].fn(group, all_rewards()["majority"].params(), ctx)


def verl_config(*overrides: str, reward: str = "majority", n: int = 4):
    """verl's own ppo_trainer config (hydra), pointed at SmolLM2 and the ttrl reward manager."""
    from hydra import compose, initialize_config_dir

    cfg_dir = os.path.join(os.path.dirname(verl.__file__), "trainer", "config")
    with initialize_config_dir(config_dir=cfg_dir, version_base=None):
        return compose("ppo_trainer", overrides=[
            f"actor_rollout_ref.model.path={resolve_model('smollm2-135m')}", f"actor_rollout_ref.rollout.n={n}",
            "algorithm.adv_estimator=grpo", "data.train_batch_size=3", "trainer.val_before_train=False",
            "reward.num_workers=1", "reward.reward_manager.source=importlib",
            "reward.reward_manager.name=TTRLRewardManager",
            "reward.reward_manager.module.path=pkg://ttrl.integrations.verl",
            f"+reward.reward_kwargs.ttrl.reward={reward}", "+reward.reward_kwargs.ttrl.answer_type=number",
            *overrides])


# 3 prompts x 4 responses, as verl lays a batch out after rollout (repeat(interleave=True): a uid's samples
# sit together); the responses are chosen so that fragments of a group would vote differently
PROMPTS = ["What is 2 + 3?", "What is 6 x 7?", "What is 10 - 1?"]
RESPONSES = [["5", "It is 5", "6", "no idea"], ["42", "41", "41", "42 exactly"], ["9", "9", "nine", "8"]]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))


def make_batch(tok, labels=None, session_ids=True) -> DataProto:
    """A verl DataProto: left-padded prompts, right-padded responses, attention mask over both, uid per
    group, and the label in reward_model.ground_truth as verl's data sets carry it."""
    labels = labels or [LABEL] * len(PROMPTS)
    rows = [(g, i, p, r) for g, (p, rs) in enumerate(zip(PROMPTS, RESPONSES)) for i, r in enumerate(rs)]
    pids = [tok(p, add_special_tokens=False)["input_ids"] for _, _, p, _ in rows]
    rids = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for *_, r in rows]
    P, R, pad = max(map(len, pids)), max(map(len, rids)) + 2, tok.pad_token_id
    prompts = torch.tensor([[pad] * (P - len(x)) + x for x in pids])
    responses = torch.tensor([x + [pad] * (R - len(x)) for x in rids])
    mask = torch.tensor([[0] * (P - len(a)) + [1] * len(a) + [1] * len(b) + [0] * (R - len(b)) for a, b in zip(pids, rids)])
    non_tensors = {
        "uid": np.array([f"uid-{g}" for g, *_ in rows], dtype=object),
        "data_source": np.array(["ttrl-test"] * len(rows), dtype=object),
        "reward_model": np.array([{"style": "rule", "ground_truth": labels[g]} for g, *_ in rows], dtype=object),
        "extra_info": np.array([{"answer": labels[g]} for g, *_ in rows], dtype=object),
    }
    if session_ids:
        non_tensors["session_id"] = np.array([i for _, i, *_ in rows], dtype=object)
    return DataProto.from_dict(tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                                        "input_ids": torch.cat([prompts, responses], 1)}, non_tensors=non_tensors)


def expected(reward="majority") -> list[float]:
    scorer = GroupScorer(reward, "number")
    return [x for g, rs in enumerate(RESPONSES) for x in scorer(f"uid-{g}", PROMPTS[g], rs)]


def shuffled(batch: DataProto, seed=0) -> tuple[DataProto, list[int]]:
    order = list(range(len(batch)))
    random.Random(seed).shuffle(order)
    return batch.select_idxs(order), order


def test_reward_worker_scores_each_uid_group_whole(tokenizer):
    """verl's RewardLoopWorker, built from verl's config, loads the manager through importlib and fans the batch
    out one sample at a time (shuffled, as rollouts finish in any order); every group is still scored whole."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    worker = RewardLoopWorker(verl_config())
    batch, order = shuffled(make_batch(tokenizer))
    out = asyncio.run(worker.compute_score_batch(batch))
    got = [o["reward_score"] for o in out]
    want = expected()
    assert got == [want[i] for i in order]
    # hand-computed: votes 5,5,6,- -> 5; 42,41,41,42 -> tie, first seen (session 0) 42 wins; 9,9,-,8 -> 9
    assert want == [1, 1, 0, 0, 1, 0, 0, 1, 1, 1, 0, 0]
    assert [o["reward_extra_info"]["ttrl_reward"] for o in out] == got


def test_frequency_on_fragments_would_differ_so_groups_must_be_whole(tokenizer):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    worker = RewardLoopWorker(verl_config(reward="frequency"))
    batch, order = shuffled(make_batch(tokenizer), seed=1)
    got = [o["reward_score"] for o in asyncio.run(worker.compute_score_batch(batch))]
    assert got == [expected("frequency")[i] for i in order]
    # group 0 whole: answers 5,5,6,- -> 2/4, 2/4, 1/4, 0 (its first two samples alone would give 1, 1)
    assert expected("frequency")[0:4] == [0.5, 0.5, 0.25, 0.0]


def test_labels_in_the_batch_never_reach_the_reward(tokenizer):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    worker = RewardLoopWorker(verl_config(reward="test_verl_sees_no_label"))
    _seen.clear()
    with_label = [o["reward_score"] for o in asyncio.run(worker.compute_score_batch(make_batch(tokenizer)))]
    changed = [o["reward_score"] for o in asyncio.run(worker.compute_score_batch(make_batch(tokenizer, ["5", "41", "8"])))]
    assert with_label == changed == expected()
    assert sorted(g.query.id for g in _seen[:3]) == ["uid-0", "uid-1", "uid-2"]
    assert all(g.query.prompt in PROMPTS for g in _seen)


def test_without_session_ids_the_order_is_fixed_by_text(tokenizer):
    """verl's v0 trainer passes no per-sample index: groups are ordered by response text, whatever the arrival."""
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    runs = []
    for seed in (0, 1, 2):
        worker = RewardLoopWorker(verl_config())
        batch, order = shuffled(make_batch(tokenizer, session_ids=False), seed)
        got = [o["reward_score"] for o in asyncio.run(worker.compute_score_batch(batch))]
        back = [0.0] * len(got)
        for pos, i in enumerate(order):
            back[i] = got[pos]
        runs.append(back)
    assert runs[0] == runs[1] == runs[2]


@pytest.mark.parametrize("override, match", [
    ("reward.num_workers=8", "num_workers"),
    ("trainer.val_before_train=True", "val_kwargs.n"),
    ("algorithm.adv_estimator=remax", "remax"),
    ("data.train_batch_size=512", "exceed"),
])
def test_configurations_that_could_split_a_group_are_refused(tokenizer, override, match):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    with pytest.raises(ValueError, match=match):
        RewardLoopWorker(verl_config(override))


def test_an_incomplete_group_times_out_with_a_clear_error(tokenizer):
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    worker = RewardLoopWorker(verl_config("+reward.reward_kwargs.ttrl.group_timeout_s=0.5"))
    with pytest.raises(RuntimeError, match="3 of 4 samples"):
        asyncio.run(worker.compute_score_batch(make_batch(tokenizer)[:3]))


@pytest.mark.slow
def test_ray_reward_loop_manager_streams_samples_and_fills_rm_scores(tokenizer):
    """The real Ray path: verl's RewardLoopManager starts the reward worker actor; samples are sent one Ray call
    each, concurrently and out of order, as verl's agent loop streams them; then compute_rm_score places each
    reward on the last response token."""
    import ray
    from verl.experimental.reward_loop import RewardLoopManager

    ray.init(num_cpus=1, include_dashboard=False, runtime_env={"env_vars": {
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}})
    try:
        manager = RewardLoopManager(verl_config())
        worker = manager.reward_loop_workers[0]
        batch, order = shuffled(make_batch(tokenizer), seed=2)
        streamed = ray.get([worker.compute_score.remote(batch[i:i + 1]) for i in range(len(batch))])
        want = expected()
        assert [s["reward_score"] for s in streamed] == [want[i] for i in order]
        rm = manager.compute_rm_score(make_batch(tokenizer)).batch["rm_scores"]
        last = make_batch(tokenizer).batch["attention_mask"][:, -rm.shape[1]:].sum(1) - 1
        assert rm[torch.arange(len(rm)), last].tolist() == want and rm.sum().item() == sum(want)
    finally:
        ray.shutdown()


def test_the_scale_out_page_verl_config_composes_and_passes_the_checks(tmp_path):
    """docs/scale_out.md's ttrl_verl.yaml composes against verl's own hydra schema and loads the manager."""
    from doc_blocks import named_blocks
    from hydra import compose, initialize_config_dir
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    from ttrl.integrations.verl import check_config

    (tmp_path / "ttrl_verl.yaml").write_text(named_blocks("scale_out.md")["ttrl_verl.yaml"])
    with initialize_config_dir(config_dir=str(tmp_path), version_base=None):
        cfg = compose("ttrl_verl")
    assert check_config(cfg) == 64 and cfg.reward.reward_kwargs.ttrl.answer_type == "math"
    assert cfg.actor_rollout_ref.actor.ppo_mini_batch_size == cfg.data.train_batch_size  # one update per step
    cfg.actor_rollout_ref.model.path = str(resolve_model("smollm2-135m"))  # no hub here: a local tokenizer
    worker = RewardLoopWorker(cfg)
    assert type(worker.reward_manager).__name__ == "TTRLRewardManager" and worker.reward_manager.group_size == 64
