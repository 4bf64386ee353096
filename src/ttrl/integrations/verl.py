"""A ttrl reward inside verl (checked on verl 0.9.1): a reward-loop reward manager that scores whole groups.

verl 0.9's reward extension point is `RewardManagerBase.run_single(data)` (verl.experimental.reward_loop),
and verl calls it once per sample: streamed from the agent loop as each rollout finishes (one Ray call per
sample, to a reward worker picked at random), or fanned out per sample by `RewardLoopWorker
.compute_score_batch`. It never sees a group. ttrl rewards compare a group's samples, so this manager holds
each sample until all `actor_rollout_ref.rollout.n` samples sharing its `uid` (verl's group id, the one its
GRPO advantage groups by) have arrived, scores the whole group once, and answers every waiting call.

    reward:
      num_workers: 1   # a group's samples must meet in one worker (verl picks one at random per sample)
      reward_manager:
        source: importlib
        name: TTRLRewardManager
        module: {path: pkg://ttrl.integrations.verl}
      reward_kwargs:
        ttrl: {reward: majority, answer_type: math}   # also: params, seed, group_timeout_s, extractor options

Only the prompt and response texts reach the ttrl reward: `reward_model.ground_truth`, `extra_info` and
every other column of the batch are never read.
"""
from __future__ import annotations

import asyncio
from typing import Any

from .scoring import GroupScorer

try:
    from verl import DataProto
    from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase
except ImportError as e:  # verl pins an older transformers than ttrl: it lives in its own environment
    raise ImportError("ttrl.integrations.verl needs verl>=0.9 (install it in its own environment, see "
                      "docs/scale_out.md)") from e

# Ray runs at most this many calls at once on an async actor unless told otherwise (Ray's documented default
# max_concurrency for async actors); verl creates its reward workers without changing it. Calls beyond it
# queue, so a batch larger than this could leave every running call waiting on a group member still queued.
RAY_ASYNC_ACTOR_CONCURRENCY = 1000


def _plain(x: Any) -> Any:
    try:
        from omegaconf import OmegaConf

        return OmegaConf.to_container(x, resolve=True) if OmegaConf.is_config(x) else x
    except ImportError:
        return x


def check_config(config) -> int:
    """The group size (rollout.n), after refusing configurations in which a group could not meet whole."""
    n = int(config.actor_rollout_ref.rollout.n)
    if int(config.reward.num_workers) != 1:
        raise ValueError(f"TTRLRewardManager: reward.num_workers={config.reward.num_workers}; set it to 1 (verl sends "
                         "each sample to a random reward worker, so a group split over workers would never be whole)")
    if str(config.algorithm.adv_estimator).lower().endswith("remax"):
        raise ValueError("TTRLRewardManager: adv_estimator=remax adds a greedy baseline sample under the same uid; "
                         "use grpo (or another group estimator)")
    trainer = config.trainer
    validates = bool(trainer.get("val_before_train", False)) or int(trainer.get("test_freq", -1) or -1) > 0
    val_n = int(config.actor_rollout_ref.rollout.val_kwargs.n)
    if validates and val_n != n:
        raise ValueError(f"TTRLRewardManager: validation samples val_kwargs.n={val_n} per prompt but training samples "
                         f"rollout.n={n}, and the manager cannot tell the two apart; set "
                         f"actor_rollout_ref.rollout.val_kwargs.n={n}, or trainer.val_before_train=False "
                         "trainer.test_freq=-1 (label-free training has no validation reward anyway)")
    batch = int(config.data.train_batch_size) * n
    if batch > RAY_ASYNC_ACTOR_CONCURRENCY:
        raise ValueError(f"TTRLRewardManager: data.train_batch_size x rollout.n = {batch} samples exceed the "
                         f"{RAY_ASYNC_ACTOR_CONCURRENCY} calls one Ray reward worker runs at once, so groups could "
                         "wait on members that are queued behind them; use a smaller train_batch_size")
    return n


class TTRLRewardManager(RewardManagerBase):
    """Runs any ttrl reward (reward.reward_kwargs.ttrl.reward, default majority) over each uid's whole group."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        opts = dict(_plain(config.reward.get("reward_kwargs", {}).get("ttrl", {})) or {})
        self.group_size = check_config(config)
        self.timeout = float(opts.pop("group_timeout_s", 3600.0))  # a group still incomplete after this is an error
        self.scorer = GroupScorer(opts.pop("reward", "majority"), opts.pop("answer_type", "math"), opts.pop("params", None),
                                  int(opts.pop("seed", 0)), engine="verl", **opts)
        self._waiting: dict[str, list[tuple[str, str, Any, asyncio.Future]]] = {}

    def _texts(self, data: DataProto) -> tuple[str, str, str, Any]:
        """(uid, prompt, response, session id) of a sample's last sequence, decoded as verl's own managers do."""
        item = data[-1:][0]
        prompt_ids, response_ids = item.batch["prompts"], item.batch["responses"]
        mask = item.batch["attention_mask"]
        prompt = prompt_ids[mask[: prompt_ids.shape[-1]].bool()]
        response = response_ids[: int(mask[-response_ids.shape[-1]:].sum())]
        return (str(item.non_tensor_batch["uid"]), self.tokenizer.decode(prompt, skip_special_tokens=True),
                self.tokenizer.decode(response, skip_special_tokens=True), item.non_tensor_batch.get("session_id"))

    def _score(self, uid: str, members: list[tuple[str, str, Any, asyncio.Future]]) -> None:
        # arrival order follows rollout timing; a fixed order (the sample's index in its group, which verl's
        # v1 trainer passes as session_id, else the text) keeps a vote's tie-break reproducible
        members = sorted(members, key=lambda m: (m[2] is None, -1 if m[2] is None else int(m[2]), m[1]))
        try:
            rewards = self.scorer(uid, members[0][0], [text for _, text, _, _ in members])
        except Exception as e:  # noqa: BLE001 (handed to every waiting call, which raises it)
            for *_, fut in members:
                fut.set_exception(e)
            return
        for (*_, fut), r in zip(members, rewards, strict=True):
            fut.set_result(r)

    async def run_single(self, data: DataProto) -> dict:
        uid, prompt, response, session = self._texts(data)
        fut = asyncio.get_running_loop().create_future()
        members = self._waiting.setdefault(uid, [])
        members.append((prompt, response, session, fut))
        if len(members) == self.group_size:
            self._score(uid, self._waiting.pop(uid))
        try:
            score = await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except asyncio.TimeoutError:
            got = len(self._waiting.get(uid, ()))
            raise RuntimeError(f"TTRLRewardManager: group {uid} has {got} of {self.group_size} samples after "
                               f"{self.timeout:.0f} s; every sample of a uid must reach this worker") from None
        return {"reward_score": score, "reward_extra_info": {"ttrl_reward": score}}
